"""The reference for per-frame plans (docs/perframe.md): every call of a plan, job after job, made
by ONE sampler over the whole video, reset once. Each frame's multistep history therefore runs
unbroken from its first move to clean, whatever job boundaries the plan has; each call shows the
model exactly its job's frames (observed and latent); every other frame holds still. No executor,
no batching, no carried state: what the executor and the exact scores must reproduce."""

from __future__ import annotations

import torch

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.evaluation.gaussian import gaussian_kl, logdet_psd
from fdm_engine.executor import grid_timesteps, job_seed
from sampling_schemes import Plan


def one_sampler_run(plan: Plan, model, sampler, x: torch.Tensor, step_noise=None) -> torch.Tensor:
    """x [1, T, C, H, W]: every frame's starting value (given frames clean, the others their
    starting noise); step_noise(k) [1, T, C, H, W] for the k-th call. Returns the clean video."""
    grid = next(j.grid for j in plan.jobs)
    timesteps = grid_timesteps(sampler, grid)  # grid level -> timestep
    level = torch.full((plan.length,), grid, dtype=torch.long)
    level[:plan.n_obs] = 0
    sampler.reset()
    k = 0
    for job in plan.jobs:
        idx = torch.tensor(job.observed + job.latent)
        latent = list(job.latent)
        assert level[latent].tolist() == list(job.start)
        for row in job.schedule[1:]:
            t = timesteps[level]
            level[latent] = torch.tensor(row)
            t_next = timesteps[level]
            shown = t[idx]
            out = torch.zeros_like(x)
            out[:, idx] = model(x[:, idx], idx[None], shown.clamp(min=0).float()[None], (shown < 0)[None])
            x_next = sampler.step(out, t[None], t_next[None], x, noise=step_noise(k) if sampler.stochastic else None)
            x = torch.where(expand_like((t_next == t)[None], x).bool(), x, x_next)
            k += 1
    assert bool((level == 0).all())
    return x


def calls(plan: Plan) -> int:
    return sum(j.calls for j in plan.jobs)


def start_noise(plan: Plan, given: torch.Tensor, frame_shape, seed: int, video: int) -> torch.Tensor:
    """[1, T, C, H, W]: the given frames, then each frame's starting noise as the executor draws it
    (its first job's generator, over the slots that job finds at pure noise)."""
    x = torch.zeros(1, plan.length, *frame_shape)
    x[0, :plan.n_obs] = given
    touched = set(range(plan.n_obs))
    for order, job in enumerate(plan.jobs):
        fresh = [f for f, a in zip(job.latent, job.start) if a == job.grid]
        g = torch.Generator().manual_seed(job_seed(seed, video, order))
        noise = torch.randn(len(fresh), *frame_shape, generator=g)
        for f, z in zip(fresh, noise):
            if f not in touched:
                x[0, f] = z
        touched |= set(job.latent)
    return x


def one_sampler_kl(plan: Plan, oracle, sampler) -> float:
    """The exact KL of `one_sampler_run` with the oracle (an unconditional plan, n_obs = 0): the
    run is affine in the starting noise and the step noise, measured on basis inputs."""
    T, n = plan.length, calls(plan)
    width = T + (n * T if sampler.stochastic else 0) + 1  # the last column measures the offset
    x = torch.zeros(1, T, 1, 1, width, dtype=torch.float64)
    x[0, :, 0, 0, :T] = torch.eye(T, dtype=torch.float64)

    def step_noise(k: int) -> torch.Tensor:
        z = torch.zeros_like(x)
        z[0, :, 0, 0, T + k * T:T + (k + 1) * T] = torch.eye(T, dtype=torch.float64)
        return z

    cols = one_sampler_run(plan, oracle, sampler, x, step_noise)[0, :, 0, 0]  # [T, width]
    b = cols[:, -1]
    a = cols[:, :-1] - b[:, None]
    cov = a @ a.T
    return gaussian_kl(b, cov, oracle.covariance(torch.arange(T)), logdet_psd(cov))
