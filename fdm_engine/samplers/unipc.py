"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", arXiv:2302.04867): UniP-p predictor (Alg. 2) and UniC-p corrector (Alg. 1) in
data prediction with B(h) = e^h - 1 ("bh2"), multistep, order up to 3.

At each call the model's x0 at the point x_i reached by the last predictor first corrects x_i
(UniC: the same update recomputed with x0_i included, which raises the order by one at no extra
evaluation), then the predictor moves the corrected point on. Both solve a small per-frame linear
system R rho = b in the frame's own step ratios r_k = (lambda_k - lambda_i) / h, so frames at
different levels in one call each use their own history (`FrameHistory`).
"""

from __future__ import annotations

import torch

from fdm_engine.diffusion.schedule import alpha_sigma_of, expand_like
from fdm_engine.samplers.base import Sampler, combine, held_or_ended
from fdm_engine.samplers.history import FrameHistory, FrameState


def _coefficients(h: torch.Tensor, rks: list[torch.Tensor]):
    """R [.., p, p] (R_jk = r_k^j) and b [.., p] of UniPC's order conditions for step h [..] and
    ratios rks (the last one 1); phi_1 = e^-h - 1 = B(h)."""
    hh = -h
    phi1 = torch.expm1(hh)
    r = torch.stack(rks, -1)  # [.., p]
    rows, b = [], []
    phi_k, fact = phi1 / hh - 1, 1
    for i in range(1, len(rks) + 1):
        rows.append(r ** (i - 1))
        b.append(phi_k * fact / phi1)
        fact *= i + 1
        phi_k = phi_k / hh - 1 / fact
    return torch.stack(rows, -2), torch.stack(b, -1), phi1


class UniPCSampler(Sampler):
    """UniPC-bh2, predictor order up to `order` (3), with the corrector on every step after the first."""

    order = 3
    clean_step_is_x0 = True  # update: where(t_next < 0, x0, ...)
    update_keeps_clean = True

    def reset(self) -> None:
        self.history = FrameHistory(self.order)
        self._last = None  # (x before the last predictor, its t [B, F], its order [B, F], pending [B, F])

    # The corrector reads the whole history before the next push, and the point the last predictor left.
    def carried(self) -> FrameState | None:
        state = self.history.carried(self.order)
        if state is not None and self._last is not None:
            x, t, order, pending = self._last
            state.values["x_last"] = x
            state.meta.update(t_last=t, order_last=order, pending=pending)
        return state

    def carry_in(self, state: FrameState) -> None:
        self.history.load(state, self.order)
        if "x_last" in state.values:
            m = state.meta
            self._last = (state.values["x_last"], m["t_last"], m["order_last"].to(torch.int64), m["pending"].bool())

    def _combine(self, x, t_from, t_to, depth: torch.Tensor, extra=None, held=None, clean=None):
        """The UniP (extra None) or UniC (extra = x0 at the new point) update from (x, t_from) to t_to
        using history entries 0..depth-1 (entry 0 at t_from); per frame the order `depth` (1..order).

        Each order's update is a weighted sum of x, the history's x0 entries and `extra`: the
        weights [B, F] are chosen per frame, then the sum makes one pass per term. Slots `held`
        [B, F] keep x, slots `clean` take history entry 0 (the x0 estimate of a frame that ends)."""
        lam, lam_to = self.half_log_snr(t_from), self.half_log_snr(t_to)
        # Frames that do not move (or end clean, which returns x0) get a dummy finite step.
        h = torch.where((t_from >= 0) & (t_to >= 0) & (t_to != t_from), lam_to - lam, torch.ones_like(lam))
        lam = torch.where(t_from >= 0, lam, torch.zeros_like(lam))
        (a_n, s_n), (_, s_t) = self.schedule.alpha_sigma(t_to), self.schedule.alpha_sigma(t_from)
        zero = torch.zeros_like(h)
        # weights of x, m0, m1 .. m_{order-1}, extra; res = (s_n/s) x - a_n phi1 (m0 + sum rho_k d_k),
        # d_k = (m_k - m0) / r_k (k < p), and for the corrector its last d = extra - m0
        w_m = [zero] * self.order
        w_extra = zero
        for p in range(1, self.order + 1):
            rks = [(self.history.lam_or(k, lam - k * h) - lam) / h for k in range(1, p)]  # fallback: distinct, finite, unused
            R, b, phi1 = _coefficients(h, rks + [torch.ones_like(h)])
            if extra is None:  # predictor: rho solves the first p-1 order conditions
                if p == 1:
                    rho = torch.zeros(h.shape + (0,), dtype=h.dtype)
                elif p == 2:
                    rho = torch.full(h.shape + (1,), 0.5, dtype=h.dtype)  # the paper's choice for UniP-2
                else:
                    rho = torch.linalg.solve(R[..., :-1, :-1], b[..., :-1])
            else:  # corrector: all p conditions, the new x0 as the last difference
                rho = torch.full(h.shape + (1,), 0.5, dtype=h.dtype) if p == 1 else torch.linalg.solve(R, b)
            scale = -a_n * phi1
            m = [scale * (1 - sum((rho[..., k - 1] / rks[k - 1] for k in range(1, p)), zero))]
            m += [scale * rho[..., k - 1] / rks[k - 1] for k in range(1, p)]
            e = zero
            if extra is not None:
                m[0] = m[0] - scale * rho[..., p - 1]
                e = scale * rho[..., p - 1]
            m += [zero] * (self.order - p)
            use = depth == p if p > 1 else torch.ones_like(depth, dtype=torch.bool)  # (p = 1 also for depth 0)
            w_m = [torch.where(use, new, old) for new, old in zip(m, w_m)]
            w_extra = torch.where(use, e, w_extra)
        w_x = s_n / s_t
        if held is not None:
            w_x, w_m = held_or_ended(w_x, w_m, held, clean)
        m0 = self.history.x0[0]
        terms = [m0] + [self.history.x0_or(k, m0) for k in range(1, self.order)]
        if extra is not None:
            terms, w_m = terms + [extra], w_m + [w_extra]
        return combine(x, w_x, terms, w_m)

    def update(self, x0, x_t, t, t_next, noise):
        moved = (t_next != t) & (t >= 0)
        if self._last is not None:  # correct the point each moving frame's last predictor reached
            x_prev, t_prev, order_prev, pending = self._last
            fix = pending & moved
            if bool(fix.any()):
                corrected = self._combine(x_prev, t_prev, t, order_prev, extra=x0)
                x_t = torch.where(expand_like(fix, x_t).bool(), corrected, x_t)
        self.history.push(x0, self.half_log_snr(t), moved)
        order = self.history.available(t.shape).clamp(max=self.order)
        # moving frames that end clean take x0 (just pushed: entry 0), the others keep x_t
        out = self._combine(x_t, t, t_next, order, held=~moved, clean=moved & (t_next < 0))
        last = (x_t, t.clone(), order, moved & (t_next >= 0))
        # A frame that holds still in a call (an input only) keeps its correction pending until it
        # next moves, with that call's x0, as the frame's own history uses only its moving calls:
        # so calls a frame sits out, inside a job or between jobs, change nothing for it.
        wait = None if self._last is None else pending & ~moved
        if wait is not None and bool(wait.any()):
            w = expand_like(wait, x_t).bool()
            last = (torch.where(w, x_prev, x_t), torch.where(wait, t_prev, last[1]),
                    torch.where(wait, order_prev, order), wait | last[3])
        self._last = last
        return out


class UniPC2Sampler(UniPCSampler):
    """UniPC-bh2 with predictor order up to 2."""

    order = 2
