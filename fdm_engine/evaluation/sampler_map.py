"""A real sampler's job as an exact affine-Gaussian map, measured by running the sampler itself.

With the oracle the denoiser is linear in (x_t, y) and every sampler step is linear in
(x_t, x0 estimate, fresh noise), so a job's output is affine in its inputs

    inputs u = [y (observed values, O); x_T (latent start noise, L); z_0 .. z_{n-1} (step noises, L each)]
    x_L = A @ u + b.

Pixels are independent and share these matrices, so we do not re-derive A: we run the real
`run_job` (the code `fdm sample` runs) on one video whose "pixels" are columns, column j holding
the basis vector e_j as its inputs, plus one all-zero column. Column j comes out as A e_j + b, the
zero column as b; subtracting gives A exactly (to float64 rounding). Deterministic samplers take
no step noise, so their inputs are only [y; x_T].
"""

from __future__ import annotations

from typing import Sequence

import torch

from fdm_engine.evaluation.gaussian import JobMap, relative_key
from fdm_engine.samplers import Sampler, run_job


def num_steps(sampler: Sampler) -> int:
    """Moves the sampler makes per job (spacings may merge duplicate timesteps)."""
    return len(sampler.trajectory()) - 1


def sampler_job_map(oracle, sampler: Sampler, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
    """Run `sampler` with `oracle` on the basis inputs of the job (observed, latent); -> its JobMap.

    gain [L, O] (the map from y), noise [L, L * (1 + n_noisy_steps)], offset [L].
    """
    n_o, n_l = len(observed), len(latent)
    n_steps = num_steps(sampler)
    n_noise = n_steps * n_l if sampler.stochastic else 0
    width = n_o + n_l + n_noise + 1  # the last column is all-zero input: it measures the offset b
    shape = (1, n_o + n_l, 1, 1, width)  # [B, F, C, H, W]: the columns are the "pixels"
    x_obs = torch.zeros(shape, dtype=torch.float64)
    x_obs[0, :n_o, 0, 0, :n_o] = torch.eye(n_o, dtype=torch.float64)
    start = torch.zeros(shape, dtype=torch.float64)
    start[0, n_o:, 0, 0, n_o:n_o + n_l] = torch.eye(n_l, dtype=torch.float64)

    def step_noise(i: int) -> torch.Tensor:
        z = torch.zeros(shape, dtype=torch.float64)
        first = n_o + n_l + i * n_l
        z[0, n_o:, 0, 0, first:first + n_l] = torch.eye(n_l, dtype=torch.float64)
        return z

    frames = torch.tensor([list(observed) + list(latent)], dtype=torch.long)
    mask = torch.tensor([[True] * n_o + [False] * n_l])
    out = run_job(oracle, sampler, start, frames, mask, x_obs, step_noise=step_noise)
    cols = out[0, n_o:, 0, 0].to(torch.float64)  # [L, width]
    offset = cols[:, -1]
    coef = cols[:, :-1] - offset[:, None]
    return JobMap(gain=coef[:, :n_o], noise=coef[:, n_o:], offset=offset)


class SamplerConditional:
    """JobMapper for a real sampler with the oracle; maps are cached per job shape."""

    def __init__(self, oracle, sampler: Sampler):
        self.oracle = oracle
        self.sampler = sampler
        self.name = type(sampler).__name__
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            self._cache[key] = sampler_job_map(self.oracle, self.sampler, *key)
        return self._cache[key]
