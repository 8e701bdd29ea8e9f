"""DDIM (Song et al. 2021, eq. 12); eta = 0 is deterministic, eta = 1 matches DDPM's posterior."""

from __future__ import annotations

from fdm_engine.samplers.base import Sampler


class DDIMSampler(Sampler):
    @property
    def stochastic(self) -> bool:
        return self.config.eta > 0

    def update(self, x0, x_t, t, t_next, noise):
        ab_t, a_t, s_t = self.coefs(t, x_t)
        ab_n, a_n, _ = self.coefs(t_next, x_t)
        eps = (x_t - a_t * x0) / s_t
        sigma = self.config.eta * ((1 - ab_n) / (1 - ab_t) * (1 - ab_t / ab_n)).clamp(min=0).sqrt()
        out = a_n * x0 + (1 - ab_n - sigma**2).clamp(min=0).sqrt() * eps
        return out + sigma * noise if self.stochastic else out
