"""Heun's second-order sampler of EDM (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Alg. 1, deterministic: S_churn = 0).

In EDM's variables x~ = x / a and sigma = s / a the probability-flow ODE is dx~/dsigma =
(x~ - x0) / sigma. Each step is an Euler move to the next level followed by a trapezoidal
correction that uses the model at the point reached, so a step costs two network evaluations,
except the last (to sigma = 0), where the Euler move lands on the x0 estimate. `steps` counts
network evaluations (NFE), as for every sampler: n steps visit m = (n + 1) // 2 levels, and the
trajectory repeats each level after the first (t0, t1, t1, t2, t2, ..., t_{m-1}, t_{m-1}, clean):
the repeated move is the correction.
"""

from __future__ import annotations

import torch

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.samplers.base import Sampler


class HeunSampler(Sampler):
    def levels_for(self, num_steps: int) -> int:
        return max(1, (num_steps + 1) // 2)  # 2m - 1 evaluations

    def trajectory(self) -> torch.Tensor:
        ts = self.timesteps.to(torch.float64)
        return torch.cat([ts[:1], ts[1:].repeat_interleave(2), torch.tensor([-1.0], dtype=torch.float64)])

    def reset(self) -> None:
        self._start = None  # (x~, sigma, slope d) before each frame's pending Euler move
        self._pending = None  # [B, F] bool

    def _edm(self, x, t):
        _, a, s = self.coefs(t, x)
        return x / a, s / a, a

    def update(self, x0, x_t, t, t_next, noise):
        x_tilde, sigma, a = self._edm(x_t, t)
        d = (x_tilde - x0) / sigma
        pending = torch.zeros_like(t, dtype=torch.bool) if self._pending is None else self._pending & (t >= 0)
        if bool((pending & (t_next != t)).any()):
            raise ValueError("Heun: a frame must stay at its level for its correction move (see trajectory())")
        out = x_t
        if bool(pending.any()):
            x_start, sigma_start, d_start = self._start
            corrected = a * (x_start + (sigma - sigma_start) * (d_start + d) / 2)
            out = torch.where(expand_like(pending, x_t).bool(), corrected, out)
        moved = (t_next != t) & (t >= 0)
        x_n, sigma_n, a_n = self._edm(x_t, t_next)
        euler = torch.where(expand_like(t_next < 0, x_t).bool(), x0, a_n * (x_tilde + (sigma_n - sigma) * d))
        out = torch.where(expand_like(moved, x_t).bool(), euler, out)
        self._start = (x_tilde, sigma, d)
        self._pending = moved & (t_next >= 0)
        return out
