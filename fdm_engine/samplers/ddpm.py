"""Ancestral DDPM (Ho et al. 2020, Alg. 2) between any two visited timesteps (respaced)."""

from __future__ import annotations

import torch

from fdm_engine.samplers.base import Sampler, combine


class DDPMSampler(Sampler):
    """x_next ~ q(x_next | x_t, x0) with fixed-large (beta) or fixed-small (posterior) variance.

    Between visited timesteps t > t_next the effective beta is 1 - ab_t / ab_next (improved-DDPM
    respacing). No noise is added on the final move to clean.
    """

    stochastic = True
    variance = "large"
    clean_step_is_x0 = True  # update: at t_next < 0, beta = 1 - ab_t, so the weights are (0, 1, 0)
    update_keeps_clean = True

    def update(self, x0, x_t, t, t_next, noise):
        # Coefficients in float64, cast last: near t = 0 alpha-bar is within 1e-5 of 1 (a log-SNR
        # schedule reaching lambda ~ 13), and 1 - alpha-bar from float32 values loses ~1e-2 of it.
        ab_t, ab_n = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_next)
        beta = 1 - ab_t / ab_n
        c_x0 = ab_n.sqrt() * beta / (1 - ab_t)
        c_xt = (1 - beta).sqrt() * (1 - ab_n) / (1 - ab_t)
        var = beta if self.variance == "large" else beta * (1 - ab_n) / (1 - ab_t)
        var = var * (t_next >= 0)
        moving = t >= 0  # (the others are returned unchanged by `step`)
        c_xt, c_x0, c_z = (torch.where(moving, c, torch.full_like(c, fill)) for c, fill in
                           ((c_xt, 1.0), (c_x0, 0.0), (var.sqrt(), 0.0)))
        return combine(x_t, c_xt, [x0, noise], [c_x0, c_z])  # one pass over the batch per term


class DDPMSmallSampler(DDPMSampler):
    variance = "small"
