"""Ancestral DDPM (Ho et al. 2020, Alg. 2) between any two visited timesteps (respaced)."""

from __future__ import annotations

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.samplers.base import Sampler


class DDPMSampler(Sampler):
    """x_next ~ q(x_next | x_t, x0) with fixed-large (beta) or fixed-small (posterior) variance.

    Between visited timesteps t > t_next the effective beta is 1 - ab_t / ab_next (improved-DDPM
    respacing). No noise is added on the final move to clean.
    """

    stochastic = True
    variance = "large"

    def update(self, x0, x_t, t, t_next, noise):
        ab_t, _, _ = self.coefs(t, x_t)
        ab_n, a_n, _ = self.coefs(t_next, x_t)
        beta = 1 - ab_t / ab_n
        mean = (a_n * beta / (1 - ab_t)) * x0 + ((1 - beta).sqrt() * (1 - ab_n) / (1 - ab_t)) * x_t
        var = beta if self.variance == "large" else beta * (1 - ab_n) / (1 - ab_t)
        var = var * expand_like(t_next >= 0, x_t)
        return mean + var.sqrt() * noise


class DDPMSmallSampler(DDPMSampler):
    variance = "small"
