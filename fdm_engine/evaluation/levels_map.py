"""Exact scores for per-frame-level plans and context noise (docs/perframe.md, docs/oracle.md).

With the oracle a per-frame job is still affine in its inputs, now including the values of frames
an earlier job left part-way:

    x_L' = gain @ [x_O; x_L] + offset + noise @ w,   w: the job's fresh step noise and context noise

where x_L are the latent frames' values when the job starts (fresh N(0, I) noise for frames at level
N). The map is measured by running the real `run_job` on basis inputs (as `sampler_map`). One
pixel's current values of all T frames are Gaussian; `propagate_levels` follows their covariance job
by job (every frame's value is replaced when a job moves it), and at the end every frame is clean.
The chain rule for log det used by FDM plans does not hold when values are replaced, so the
covariance is carried as a square root, cov = M M^T (M: every frame's value as a linear map of the
given frames and every noise input so far, compressed to T columns by QR), and log det comes from
M's triangular factor. A guided chain whose variance grows geometrically along the video
(df-autoregressive under history guidance, variance ratio ~1e14 at T = 300) makes cov itself
numerically singular (its correlation matrix's smallest eigenvalue falls below float64's epsilon),
while M, with the square root of cov's condition number, still resolves it: the KL stays finite.

FDM jobs with context noise keep `gaussian.propagate` (their latents start from fresh noise, so the
chain rule holds): `ContextConditional` puts the start noise and the context noise in `noise`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fdm_engine.evaluation.gaussian import Joint, JobMap, relative_key
from fdm_engine.executor import batch_levels
from fdm_engine.samplers import Sampler, run_job
from sampling_schemes import Job, Plan


def measured_map(oracle, sampler: Sampler, job: Job, context_level: float | None) -> tuple[torch.Tensor, ...]:
    """(A_O [L, O], A_L [L, L] on start values, R [L, W] on fresh noise, b [L]) of one job, measured."""
    n_o, n_l = len(job.observed), len(job.latent)
    calls = sampler.nfe if job.calls is None else job.calls
    n_step = calls * n_l if sampler.stochastic else 0
    n_ctx = n_o if context_level is not None else 0
    width = n_o + n_l + n_step + n_ctx + 1  # the last column is all-zero input: it measures b
    shape = (1, n_o + n_l, 1, 1, width)
    eye = torch.eye

    def basis(rows: slice, first: int, n: int) -> torch.Tensor:
        z = torch.zeros(shape, dtype=torch.float64)
        z[0, rows, 0, 0, first:first + n] = eye(n, dtype=torch.float64)
        return z

    x_obs, start = basis(slice(0, n_o), 0, n_o), basis(slice(n_o, None), n_o, n_l)
    ctx = basis(slice(0, n_o), n_o + n_l + n_step, n_ctx) if context_level is not None else None
    frames = torch.tensor([list(job.observed) + list(job.latent)], dtype=torch.long)
    mask = torch.tensor([[True] * n_o + [False] * n_l])
    out = run_job(oracle, sampler, start, frames, mask, x_obs, levels=batch_levels([job], n_o + n_l, sampler),
                  step_noise=lambda i: basis(slice(n_o, None), n_o + n_l + i * n_l, n_l),
                  context_level=context_level, context_noise=ctx)
    cols = out[0, n_o:, 0, 0].to(torch.float64)
    b = cols[:, -1]
    a = cols[:, :-1] - b[:, None]
    return a[:, :n_o], a[:, n_o:n_o + n_l], a[:, n_o + n_l:], b


class ContextConditional:
    """JobMapper for FDM jobs run by a real sampler with context noise (start noise is fresh)."""

    def __init__(self, oracle, sampler: Sampler, context_level: float):
        self.oracle, self.sampler, self.context_level = oracle, sampler, context_level
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            a_o, a_l, r, b = measured_map(self.oracle, self.sampler, Job.make(*key), self.context_level)
            self._cache[key] = JobMap(gain=a_o, noise=torch.cat([a_l, r], 1), offset=b)
        return self._cache[key]


class ExactContext:
    """The ideal FDM job when observed frames are seen noised: x_L from the exact conditional given
    z_O = a x_O + s e (gain on x_O, noise on e and the conditional's own)."""

    def __init__(self, oracle, context_level: float):
        self.oracle = oracle
        a, s = oracle.schedule.alpha_sigma(torch.tensor(float(context_level), dtype=torch.float64))
        self.a, self.s = float(a), float(s)
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            o, lat = key
            sigma = self.oracle.covariance(torch.tensor(o + lat))
            n_o = len(o)
            s_oo = self.a**2 * sigma[:n_o, :n_o] + self.s**2 * torch.eye(n_o, dtype=torch.float64)
            s_lo = self.a * sigma[n_o:, :n_o]
            k = torch.linalg.solve(s_oo, s_lo.T).T if n_o else torch.zeros(len(lat), 0, dtype=torch.float64)
            p = sigma[n_o:, n_o:] - k @ s_lo.T
            evals, evecs = torch.linalg.eigh((p + p.T) / 2)
            self._cache[key] = JobMap(gain=self.a * k, noise=torch.cat([self.s * k, evecs * evals.clamp(min=0).sqrt()], 1),
                                      offset=torch.zeros(len(lat), dtype=torch.float64))
        return self._cache[key]


def level_key(job: Job) -> tuple:
    return relative_key(job.observed, job.latent), job.schedule, job.grid


def propagate_levels(plan: Plan, sigma: torch.Tensor, oracle, sampler: Sampler,
                     context_level: float | None = None) -> Joint:
    """The joint of one pixel's clean video made by a per-frame plan run by `sampler` with the oracle."""
    T, n = plan.length, plan.n_obs
    mean = torch.zeros(T, dtype=torch.float64)
    root = torch.zeros(T, n, dtype=torch.float64)  # cov = root @ root.T; a column per noise input
    root[:n] = torch.linalg.cholesky(sigma[:n, :n])
    started = torch.zeros(T, dtype=torch.bool)
    started[:n] = True
    cache: dict[tuple, tuple] = {}
    for job in plan.jobs:
        key = level_key(job)
        if key not in cache:
            rel = Job(*key[0], 0, job.schedule, job.grid)
            cache[key] = measured_map(oracle, sampler, rel, context_level)
        a_o, a_l, r, b = cache[key]
        lat = torch.tensor(job.latent, dtype=torch.long)
        fresh = lat[~started[lat]]
        # start noise: N(0, 1), independent of everything (a new column each; the row was zero)
        start = torch.zeros(T, len(fresh), dtype=torch.float64)
        start[fresh, torch.arange(len(fresh))] = 1.0
        mean[fresh] = 0.0
        started[fresh] = True
        root = torch.cat([root, start], 1)
        inputs = torch.tensor(job.observed + job.latent, dtype=torch.long)
        gain = torch.cat([a_o, a_l], 1)
        mean[lat] = gain @ mean[inputs] + b
        moved = gain @ root[inputs]  # [L, columns], against the values before this job
        root = torch.cat([root, torch.zeros(T, r.shape[1], dtype=torch.float64)], 1)  # this job's fresh noise
        root[lat] = torch.cat([moved, r], 1)
        if root.shape[1] > 2 * T:  # back to T columns (root @ root.T unchanged), now and then
            root = torch.linalg.qr(root.T, mode="r").R.T
    tri = torch.linalg.qr(root.T, mode="r").R  # [T, T]: cov = tri.T @ tri
    diag = torch.diagonal(tri).abs()
    logdet = float("-inf") if root.shape[1] < T or bool((diag == 0).any()) else 2.0 * float(torch.log(diag).sum())
    return Joint(mean, root @ root.T, logdet)
