"""Per-frame memory for multistep samplers.

Frames in one network call may sit at different noise levels and start or stop moving at different
calls (observed frames, staggered per-frame schedules). A multistep sampler must combine each
frame's own previous x0 estimates, not the previous call's: the history is kept per slot, with a
count of how many entries each slot holds, and only slots that moved in a call push a new entry.
Everything is one vectorised tensor op over [B, F]; no per-frame copies of the sampler.

A frame that a later job carries on takes its history along (`FrameState`, docs/perframe.md):
the sampler hands it out after a job (`Sampler.carried`) and takes it back at the frame's next job
(`Sampler.carry_in`), so a frame's steps are the same whether or not a job boundary falls between them.
"""

from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass
class FrameState:
    """What a multistep sampler keeps per slot between calls.

    values {name: [B, F, C, H, W]}: affine in the job's inputs, like the frames (x0 estimates);
    meta   {name: [B, F]} (CPU): fixed by the plan (log-SNRs, counts, flags).
    An all-zero slot holds no history (how a frame that starts fresh is given).
    """

    values: dict[str, torch.Tensor]
    meta: dict[str, torch.Tensor]

    def slot(self, b: int, f: int) -> "FrameState":
        """One slot's state, without the [B, F] dims (CPU copies: it waits with the video's buffer)."""
        return FrameState({k: v[b, f].to("cpu", copy=True) for k, v in self.values.items()},
                          {k: v[b, f].to("cpu", copy=True) for k, v in self.meta.items()})

    @classmethod
    def gather(cls, slots: list[tuple[int, int, "FrameState"]], B: int, F: int,
               device: torch.device | str = "cpu") -> "FrameState":
        """A batch [B, F] from (b, f, one slot's state); other slots, and names a slot lacks, are zeros."""

        def stack(part: str) -> dict[str, torch.Tensor]:
            like = {k: v for _, _, s in slots for k, v in getattr(s, part).items()}
            out = {k: torch.zeros(B, F, *v.shape, dtype=v.dtype) for k, v in sorted(like.items())}
            for b, f, s in slots:
                for k, v in getattr(s, part).items():
                    out[k][b, f] = v
            return out

        values = {k: v.to(device) for k, v in stack("values").items()}
        return cls(values, stack("meta"))  # meta lives with the levels, on the CPU

    # -- one slot's bytes (the resume journal) ---------------------------------------------
    def spec(self) -> list:
        """[[part, name, dtype, shape]] of one slot's tensors, in the order of `payload`."""
        return [[part, k, str(v.dtype).removeprefix("torch."), list(v.shape)]
                for part in ("values", "meta") for k, v in sorted(getattr(self, part).items())]

    def payload(self) -> list[memoryview]:
        return [memoryview(v.contiguous().reshape(-1).view(torch.uint8).numpy())
                for part in ("values", "meta") for _, v in sorted(getattr(self, part).items())]

    @classmethod
    def from_payload(cls, spec: list, data: memoryview) -> tuple["FrameState", int]:
        """The slot `spec` describes at the start of `data`, and the bytes it took (exact round trip)."""
        parts, pos = {"values": {}, "meta": {}}, 0
        for part, name, dtype, shape in spec:
            dt = getattr(torch, dtype)
            n = math.prod(shape) * torch.empty((), dtype=dt).element_size()
            raw = torch.frombuffer(bytearray(data[pos:pos + n]), dtype=torch.uint8) if n else torch.empty(0, dtype=torch.uint8)
            parts[part][name] = raw.view(dt).view(shape)
            pos += n
        return cls(parts["values"], parts["meta"]), pos


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
            self.x0 = [x0] * self.depth  # placeholders: an entry a slot does not count gets weight 0
            self.lam = [torch.zeros_like(lam) for _ in range(self.depth)]
        new_x0, new_lam = [x0, *self.x0[:-1]], [lam, *self.lam[:-1]]
        if bool((~moved & (self.count > 0)).any()):  # slots held with history keep their entries
            m = moved.reshape(moved.shape + (1,) * (x0.dim() - moved.dim())).to(x0.device)
            self.x0 = [torch.where(m, n, o) for n, o in zip(new_x0, self.x0)]
        else:  # e.g. every FDM job: the held slots (observed) count nothing, so no batch-sized copies
            self.x0 = new_x0
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

    # -- across jobs ----------------------------------------------------------------------
    def carried(self, keep: int) -> FrameState | None:
        """The newest `keep` entries per slot: what the next steps can still read (None before the
        first push)."""
        if self.count is None:
            return None
        return FrameState({f"x0_{k}": self.x0[k] for k in range(keep)},
                          {**{f"lam_{k}": self.lam[k] for k in range(keep)}, "count": self.count.clamp(max=keep)})

    def load(self, state: FrameState, keep: int) -> None:
        """Hold the entries `carried(keep)` gave (the older ones are zeros, not counted)."""
        x0 = [state.values[f"x0_{k}"] for k in range(keep)]
        lam = [state.meta[f"lam_{k}"] for k in range(keep)]
        self.x0 = x0 + [torch.zeros_like(x0[0]) for _ in range(self.depth - keep)]
        self.lam = lam + [torch.zeros_like(lam[0]) for _ in range(self.depth - keep)]
        self.count = state.meta["count"].to(torch.int64)
