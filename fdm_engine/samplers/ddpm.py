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
        # Coefficients in float64, cast last: near t = 0 alpha-bar is within 1e-5 of 1 (a log-SNR
        # schedule reaching lambda ~ 13), and 1 - alpha-bar from float32 values loses ~1e-2 of it.
        ab_t, ab_n = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_next)
        beta = 1 - ab_t / ab_n
        c_x0 = ab_n.sqrt() * beta / (1 - ab_t)
        c_xt = (1 - beta).sqrt() * (1 - ab_n) / (1 - ab_t)
        var = beta if self.variance == "large" else beta * (1 - ab_n) / (1 - ab_t)
        var = var * (t_next >= 0)
        return expand_like(c_x0, x_t) * x0 + expand_like(c_xt, x_t) * x_t + expand_like(var.sqrt(), x_t) * noise


class DDPMSmallSampler(DDPMSampler):
    variance = "small"
