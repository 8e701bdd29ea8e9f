"""DPM-Solver++ multistep samplers in data prediction (Lu et al. 2022, "DPM-Solver++: Fast Solver
for Guided Sampling of Diffusion Probabilistic Models", arXiv:2211.01095).

With lambda = log(a / s) and h = lambda_next - lambda, the exact solution of the probability-flow
ODE is x_next = (s_next / s) x - a_next * integral of e^(lambda - lambda_next) x0(lambda) dlambda;
the solvers expand x0(lambda) in lambda around the current point using the frame's own previous x0
estimates (`FrameHistory`): r_k = (lambda_{-k} - lambda_{-k-1}) / h are the past step ratios.
Every frame takes the highest order its own history allows (no lower-order final steps: a
frame's future levels are not known to the sampler when levels are per frame).
"""

from __future__ import annotations

import torch

from fdm_engine.diffusion.schedule import alpha_sigma_of
from fdm_engine.samplers.base import Sampler, combine, half_log_snr, held_or_ended
from fdm_engine.samplers.history import FrameHistory, FrameState


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M), Alg. 2: x_next = (s_next/s) x - a_next (e^-h - 1) (x0 + (x0 - x0_prev) / (2 r))."""

    order = 2
    clean_step_is_x0 = True  # update: weights (0, 1, 0) of (x_t, x0, the rest) where t_next < 0
    update_keeps_clean = True

    def reset(self) -> None:
        self.history = FrameHistory(self.order)

    # The next step pushes its own x0 first, so the oldest entry is never read again.
    def carried(self) -> FrameState | None:
        return self.history.carried(self.order - 1)

    def carry_in(self, state: FrameState) -> None:
        self.history.load(state, self.order - 1)

    def update(self, x0, x_t, t, t_next, noise):
        ab, ab_n = self.schedule.alpha_bar(t), self.schedule.alpha_bar(t_next)
        lam, lam_n = half_log_snr(ab), half_log_snr(ab_n)
        moved = (t_next != t) & (t >= 0)
        self.history.push(x0, lam, moved)
        order = self.history.available(t.shape).clamp(max=self.order)
        (a_n, s_n), (_, s_t) = alpha_sigma_of(ab_n), alpha_sigma_of(ab)
        c_x, c_m, c_z = self.weights(a_n, s_n, s_t, lam_n - lam, self.ratios(lam, lam_n), order)
        terms = [self.history.x0_or(k, self.history.x0[0]) for k in range(len(c_m))]
        if c_z is not None:
            terms, c_m = terms + [noise], c_m + [c_z]
        # Held slots keep x_t; slots that end clean (lambda = inf) take their x0 estimate.
        c_x, c_m = held_or_ended(c_x, c_m, ~moved, moved & (t_next < 0))
        return combine(x_t, c_x, terms, c_m)

    def ratios(self, lam, lam_n):
        """[r_0, r_1]: the past step ratios, with fallbacks where a slot lacks the entry (those
        orders are not selected)."""
        h = lam_n - lam
        lam_1 = self.history.lam_or(1, lam - h)
        lam_2 = self.history.lam_or(2, lam_1 - h)
        return [(lam - lam_1) / h, (lam_1 - lam_2) / h]

    def weights(self, a_n, s_n, s_t, h, r, order):
        """The step as per-slot weights [B, F] (float64) of x_t, of the x0 history (newest first)
        and of the noise (None: none): one pass per term over the batch, whatever the order.

        2M: x_next = (s_n/s) x - a_n (e^-h - 1) (m0 + d1/2), d1 = (m0 - m1) / r_0 where order >= 2."""
        half_d = half_difference(h, r, order)
        em = torch.expm1(-h)
        return s_n / s_t, [-a_n * em * (1 + half_d), a_n * em * half_d], None


def half_difference(h, r, order):
    """The weight w with d1 / 2 = w (m0 - m1): 1 / (2 r_0) where the slot has a previous x0 (order >= 2)."""
    return torch.where(order >= 2, 0.5 / r[0], torch.zeros_like(h))


class DPMSolverPP3MSampler(DPMSolverPP2MSampler):
    """DPM-Solver++(3M): the third-order multistep of DPM-Solver (Lu et al. 2022, arXiv:2206.00927,
    Appendix B; as in their released solver), with x0 in place of the noise prediction; frames with
    fewer than two past steps use 2M or first order."""

    order = 3

    def weights(self, a_n, s_n, s_t, h, r, order):
        """x_next = (s_n/s) x - a_n phi1 m0 + a_n phi2 d1 - a_n phi3 d2 where order >= 3, with
        d1 = d1_0 + r_0 / (r_0 + r_1) (d1_0 - d1_1), d2 = (d1_0 - d1_1) / (r_0 + r_1),
        d1_0 = (m0 - m1) / r_0, d1_1 = (m1 - m2) / r_1; 2M (or first order) elsewhere."""
        c_x, (w0, w1), _ = super().weights(a_n, s_n, s_t, h, r, order.clamp(max=2))
        u, w = 1 / r[0], 1 / r[1]
        q, p = r[0] / (r[0] + r[1]), 1 / (r[0] + r[1])
        em = torch.expm1(-h)
        phi1, phi2, phi3 = em, em / h + 1, (em + h) / h**2 - 0.5
        # d1 and d2 as weights of m0, m1, m2
        d1 = ((1 + q) * u, -((1 + q) * u + q * w), q * w)
        d2 = (p * u, -p * (u + w), p * w)
        third = [a_n * (phi2 * a - phi3 * b) for a, b in zip(d1, d2)]
        third[0] = third[0] - a_n * phi1
        use = order >= 3
        return c_x, [torch.where(use, t3, t2) for t3, t2 in zip(third, (w0, w1, torch.zeros_like(w1)))], None


class DPMSolverPP2MSDESampler(DPMSolverPP2MSampler):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv:2211.01095, the SDE form of eq. 9 with the
    second-order midpoint term, as k-diffusion's sample_dpmpp_2m_sde): per step
    x_next = (s_next/s) e^-h x + a_next (1 - e^-2h) (x0 + d1/2) + s_next sqrt(1 - e^-2h) z.
    Its first-order step is exactly DDPM's posterior (fixed-small) step."""

    stochastic = True

    def weights(self, a_n, s_n, s_t, h, r, order):
        half_d = half_difference(h, r, order)
        keep = -torch.expm1(-2 * h)
        return (s_n / s_t) * torch.exp(-h), [a_n * keep * (1 + half_d), -a_n * keep * half_d], s_n * keep.sqrt()
