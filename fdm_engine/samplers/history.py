"""Per-frame memory for multistep samplers.

Frames in one network call may sit at different noise levels and start or stop moving at different
calls (observed frames, staggered per-frame schedules). A multistep sampler must combine each
frame's own previous x0 estimates, not the previous call's: the history is kept per slot, with a
count of how many entries each slot holds, and only slots that moved in a call push a new entry.
Everything is one vectorised tensor op over [B, F]; no per-frame copies of the sampler.
"""

from __future__ import annotations

import torch


class FrameHistory:
    """The last `depth` (x0 [B, F, ...], lambda [B, F]) pairs of every slot, newest first."""

    def __init__(self, depth: int):
        self.depth = depth
        self.x0: list[torch.Tensor] = []
        self.lam: list[torch.Tensor] = []
        self.count: torch.Tensor | None = None  # [B, F] int64: valid entries per slot

    def push(self, x0: torch.Tensor, lam: torch.Tensor, moved: torch.Tensor) -> None:
        """Prepend (x0, lam) on the slots where `moved` [B, F] is True; others keep theirs."""
        if self.count is None:
            self.count = torch.zeros(moved.shape, dtype=torch.int64)
            self.x0 = [torch.zeros_like(x0) for _ in range(self.depth)]
            self.lam = [torch.zeros_like(lam) for _ in range(self.depth)]
        m = moved.reshape(moved.shape + (1,) * (x0.dim() - moved.dim())).to(x0.device)
        new_x0, new_lam = [x0, *self.x0[:-1]], [lam, *self.lam[:-1]]
        self.x0 = [torch.where(m, n, o) for n, o in zip(new_x0, self.x0)]
        self.lam = [torch.where(moved, n, o) for n, o in zip(new_lam, self.lam)]
        self.count = torch.where(moved, (self.count + 1).clamp(max=self.depth), self.count)

    def available(self, shape) -> torch.Tensor:
        """[B, F] entries held per slot (0 before the first push)."""
        return torch.zeros(shape, dtype=torch.int64) if self.count is None else self.count

    def lam_or(self, k: int, fallback: torch.Tensor) -> torch.Tensor:
        """lambda of entry k where the slot holds it, else `fallback` (keeps unused maths finite)."""
        if self.count is None or k >= self.depth:
            return fallback
        return torch.where(self.count > k, self.lam[k], fallback)

    def x0_or(self, k: int, fallback: torch.Tensor) -> torch.Tensor:
        if self.count is None or k >= self.depth:
            return fallback
        return self.x0[k]
