"""DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in data prediction."""

from __future__ import annotations

import torch

from fdm_engine.samplers.base import Sampler


class DPMSolverPP2MSampler(Sampler):
    def reset(self) -> None:
        self._prev_x0 = None  # x0 estimate of the previous step
        self._prev_h = None  # its log-SNR step

    def update(self, x0, x_t, t, t_next, noise):
        _, a_t, s_t = self.coefs(t, x_t)
        _, a_n, s_n = self.coefs(t_next, x_t)
        clean = s_n == 0
        lam_t = torch.log(a_t / s_t)
        lam_n = torch.log(a_n / s_n.clamp(min=1e-30))
        h = lam_n - lam_t
        d = x0
        if self._prev_x0 is not None:
            r = self._prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self._prev_x0
        self._prev_x0, self._prev_h = x0, h
        out = (s_n / s_t) * x_t - a_n * torch.expm1(-h) * d
        # The move to clean (lambda = inf) ends at the current data estimate.
        return torch.where(clean, x0, out)
