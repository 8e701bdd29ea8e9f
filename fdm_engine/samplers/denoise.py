"""One denoising job: (model, sampler, latent noise, frames, observed mask, clean observed values)
-> latent frames. The executor batches many jobs into one such call."""

from __future__ import annotations

from typing import Callable

import torch

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.samplers.base import Sampler
from fdm_engine.samplers.history import FrameState


@torch.no_grad()
def run_job(model, sampler: Sampler, noise: torch.Tensor, frame_indices: torch.Tensor,
            observed: torch.Tensor, x_obs: torch.Tensor | None, valid: torch.Tensor | None = None,
            levels: torch.Tensor | None = None,
            step_noise: Callable[[int], torch.Tensor] | torch.Generator | None = None,
            context_level: float | None = None, context_noise: torch.Tensor | None = None,
            carry: FrameState | None = None) -> torch.Tensor:
    """Sample the latent frames of a batch of jobs.

    noise         [B, F, C, H, W]  starting noise (used on latent slots)
    frame_indices [B, F] int64     absolute frame indices
    observed      [B, F] bool      conditioning slots; they keep `x_obs` and are never altered
    x_obs         [B, F, C, H, W]  clean values on observed slots (other slots ignored); None:
                                   `noise` holds them on its observed slots (the executor's way:
                                   without context noise that saves two passes over the batch)
    valid         [B, F] bool      False on padding slots (passed through to the model)
    levels        [n+1, B, F]      per-frame noise-level trajectory (timesteps; -1 clean); default:
                                   every latent frame follows `sampler.trajectory()`. A slot whose
                                   level does not change in a call is an input only and keeps its
                                   value; a slot at -1 is shown to the model as observed (clean).
                                   Latent slots start from `noise`, which for frames an earlier job
                                   left part-way holds their current values (docs/perframe.md).
    step_noise    fresh noise for stochastic samplers: a function of the step index returning
                  [B, F, C, H, W], or a generator
    context_level observed frames are shown at this timestep instead of clean (--context-noise):
                  a x_obs + s context_noise, as latent frames that do not move
    carry         multistep state of the frames an earlier job left part-way (`Sampler.carried`
                  of that job, gathered per slot); after the call `sampler.carried()` is this
                  job's, for the next (docs/perframe.md)
    returns       [B, F, C, H, W]  observed slots = x_obs (or noise's), latent slots = samples
    """
    B, F = observed.shape
    sampler.reset()
    if carry is not None:
        sampler.carry_in(carry)
    # Slots that do not move in a call keep their value: always the observed ones; with explicit
    # per-frame levels also latent slots whose level stays (not for a sampler whose own trajectory
    # repeats a level: there a repeated level is Heun's correction move, and per-frame schemes
    # refuse such samplers).
    own = sampler.trajectory()
    hold_equal = levels is not None and not bool((own[1:] == own[:-1]).any())
    if levels is None:
        levels = sampler.trajectory()[:, None, None].expand(-1, B, F)
    given = -1.0 if context_level is None else float(context_level)
    levels = torch.where(observed[None].cpu(), torch.full_like(levels, given), levels.to(torch.float64))
    # In place: observed slots already hold their clean values and are shown clean.
    in_place = x_obs is None and context_level is None
    x_obs = noise if x_obs is None else x_obs
    obs = expand_like(observed, x_obs).bool()
    shown = x_obs
    if context_level is not None:
        a, s = sampler.schedule.alpha_sigma(torch.tensor(given, dtype=torch.float64))
        shown = float(a) * x_obs + float(s) * context_noise
    x = noise if in_place else torch.where(obs, shown, noise)
    # Sampler.step returns slots at t < 0 unchanged: with the default trajectory and clean
    # observed frames, nothing else holds still.
    holds = hold_equal or context_level is not None
    observed_cpu = observed.cpu() if holds else None  # once: the levels live on the CPU
    for i in range(levels.shape[0] - 1):
        t, t_next = levels[i], levels[i + 1]
        model_levels = t.clamp(min=0).to(device=x.device, dtype=torch.float32)  # 0 on observed
        # clean slots are conditioning: the observed ones, and frames a per-frame job has finished
        clean = (t < 0).to(x.device)
        out = model(x, frame_indices, model_levels, clean, valid=valid)
        z = None
        if sampler.stochastic:
            z = step_noise(i) if callable(step_noise) else torch.randn(
                x.shape, generator=step_noise, dtype=x.dtype, device="cpu").to(x.device)
        x_next = sampler.step(out, t, t_next, x, noise=z)
        if holds:
            still = expand_like(((t_next == t) & hold_equal) | observed_cpu, x).bool()
            x_next = torch.where(still, x, x_next)
        x = x_next
    return x if in_place else torch.where(obs, x_obs, x)
