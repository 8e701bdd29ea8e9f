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

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.samplers.base import Sampler
from fdm_engine.samplers.history import FrameHistory, FrameState


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M), Alg. 2: x_next = (s_next/s) x - a_next (e^-h - 1) (x0 + (x0 - x0_prev) / (2 r))."""

    order = 2
    clean_step_is_x0 = True  # update: where(clean, x0, ...)

    def reset(self) -> None:
        self.history = FrameHistory(self.order)

    # The next step pushes its own x0 first, so the oldest entry is never read again.
    def carried(self) -> FrameState | None:
        return self.history.carried(self.order - 1)

    def carry_in(self, state: FrameState) -> None:
        self.history.load(state, self.order - 1)

    def update(self, x0, x_t, t, t_next, noise):
        lam, lam_n = self.half_log_snr(t), self.half_log_snr(t_next)
        moved = (t_next != t) & (t >= 0)
        self.history.push(x0, lam, moved)
        order = self.history.available(t.shape).clamp(max=self.order)
        out = self.multistep(x_t, t, t_next, lam, lam_n, order, noise)
        clean = expand_like(t_next < 0, x_t).bool()  # lambda = inf: the move ends at the x0 estimate
        return torch.where(expand_like(moved, x_t).bool(), torch.where(clean, x0, out), x_t)

    def differences(self, lam, lam_n):
        """(h, [r_0, r_1]) with fallbacks where a slot lacks the entry (those orders are not selected)."""
        h = lam_n - lam
        lam_1 = self.history.lam_or(1, lam - h)
        lam_2 = self.history.lam_or(2, lam_1 - h)
        return h, [(lam - lam_1) / h, (lam_1 - lam_2) / h]

    def first_difference(self, x_t, t, t_next, lam, lam_n, order):
        """(a_next, s_next, s, h, x0, d1): d1 = (x0 - x0_prev) / r_0 where order >= 2, else 0."""
        _, a_n, s_n = self.coefs(t_next, x_t)
        _, _, s_t = self.coefs(t, x_t)
        h, (r0, _) = self.differences(lam, lam_n)
        m0, m1 = self.history.x0[0], self.history.x0_or(1, self.history.x0[0])
        d1 = (m0 - m1) / expand_like(r0, x_t) * expand_like(order >= 2, x_t).to(x_t.dtype)
        return a_n, s_n, s_t, h, m0, d1

    def multistep(self, x_t, t, t_next, lam, lam_n, order, noise):
        a_n, s_n, s_t, h, m0, d1 = self.first_difference(x_t, t, t_next, lam, lam_n, order)
        return (s_n / s_t) * x_t - a_n * expand_like(torch.expm1(-h), x_t) * (m0 + 0.5 * d1)


class DPMSolverPP3MSampler(DPMSolverPP2MSampler):
    """DPM-Solver++(3M): the third-order multistep of DPM-Solver (Lu et al. 2022, arXiv:2206.00927,
    Appendix B; as in their released solver), with x0 in place of the noise prediction; frames with
    fewer than two past steps use 2M or first order."""

    order = 3

    def multistep(self, x_t, t, t_next, lam, lam_n, order, noise):
        second = DPMSolverPP2MSampler.multistep(self, x_t, t, t_next, lam, lam_n, order.clamp(max=2), noise)
        _, a_n, s_n = self.coefs(t_next, x_t)
        _, _, s_t = self.coefs(t, x_t)
        h, (r0, r1) = self.differences(lam, lam_n)
        m0 = self.history.x0[0]
        m1, m2 = self.history.x0_or(1, m0), self.history.x0_or(2, m0)
        r0, r1 = expand_like(r0, x_t), expand_like(r1, x_t)
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        em = torch.expm1(-h)
        phi1, phi2, phi3 = (expand_like(c, x_t) for c in (em, em / h + 1, (em + h) / h**2 - 0.5))
        third = (s_n / s_t) * x_t - a_n * phi1 * m0 + a_n * phi2 * d1 - a_n * phi3 * d2
        return torch.where(expand_like(order >= 3, x_t).bool(), third, second)


class DPMSolverPP2MSDESampler(DPMSolverPP2MSampler):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv:2211.01095, the SDE form of eq. 9 with the
    second-order midpoint term, as k-diffusion's sample_dpmpp_2m_sde): per step
    x_next = (s_next/s) e^-h x + a_next (1 - e^-2h) (x0 + d1/2) + s_next sqrt(1 - e^-2h) z.
    Its first-order step is exactly DDPM's posterior (fixed-small) step."""

    stochastic = True

    def multistep(self, x_t, t, t_next, lam, lam_n, order, noise):
        a_n, s_n, s_t, h, m0, d1 = self.first_difference(x_t, t, t_next, lam, lam_n, order)
        decay, keep = expand_like(torch.exp(-h), x_t), expand_like(-torch.expm1(-2 * h), x_t)
        return (s_n / s_t) * decay * x_t + a_n * keep * (m0 + 0.5 * d1) + s_n * keep.sqrt() * noise
