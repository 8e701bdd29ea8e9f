"""DDIM (Song et al. 2021, eq. 12); eta = 0 is deterministic, eta = 1 matches DDPM's posterior."""

from __future__ import annotations

import torch

from fdm_engine.diffusion.schedule import alpha_sigma_of
from fdm_engine.samplers.base import Sampler, combine


class DDIMSampler(Sampler):
    clean_step_is_x0 = True  # update: at t_next < 0, c = 0 and a_n = 1, so the weights are (0, 1, 0)
    update_keeps_clean = True

    @property
    def stochastic(self) -> bool:
        return self.config.eta > 0

    def update(self, x0, x_t, t, t_next, noise):
        # x_next = a_n x0 + c eps (+ sigma z), eps = (x_t - a_t x0) / s_t: weights of x_t, x0 and z,
        # in float64 (one pass over the batch per term)
        ab_t, ab_n = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_next)
        (a_t, s_t), a_n = alpha_sigma_of(ab_t), ab_n.sqrt()
        sigma = self.config.eta * ((1 - ab_n) / (1 - ab_t) * (1 - ab_t / ab_n)).clamp(min=0).sqrt()
        c = (1 - ab_n - sigma**2).clamp(min=0).sqrt()
        moving = t >= 0  # (the others are returned unchanged by `step`)
        w_x = torch.where(moving, c / s_t, torch.ones_like(c))
        w_0 = torch.where(moving, a_n - c * a_t / s_t, torch.zeros_like(c))
        if not self.stochastic:
            return combine(x_t, w_x, [x0], [w_0])
        return combine(x_t, w_x, [x0, noise], [w_0, torch.where(moving, sigma, torch.zeros_like(sigma))])
