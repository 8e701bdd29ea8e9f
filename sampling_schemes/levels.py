"""What per-frame-level schemes share (docs/perframe.md): their options, their registry entry and
the clean frames a call looks at.

A per-frame scheme plans on a grid of N = `steps` levels (N: pure noise, 0: clean), the moves of
the sampler's trajectory; every frame goes from N to 0 one level per network call, so every frame
gets exactly N sampler steps whatever the scheme. The executor maps level l to the sampler's
timestep trajectory[N - l].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Iterator

from fdm_common.errors import FdmError
from sampling_schemes.job import Job, Progress


@dataclasses.dataclass(frozen=True)
class LevelOptions:
    """Settings of the per-frame schemes (flags of `fdm sample`, `fdm schemes`, `fdm eval`)."""

    steps: int = 25  # N: levels of the grid = sampler moves per frame
    uncertainty_scale: float = 1.0  # df-pyramid, df-trapezoid: levels between neighbouring frames
    partitions: int = 0  # fifo: calls per diagonal step (0: the fewest that fit in K)
    lookahead: bool = False  # fifo: each call also sees the cleaner queue frames before its own
    block_size: int = 1  # ar-step: frames that start together
    ar_step: int = 1  # ar-step: calls between the starts of consecutive blocks

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise FdmError(f"--steps {self.steps!r}: must be an integer >= 1")
        if not (isinstance(self.uncertainty_scale, (int, float)) and math.isfinite(self.uncertainty_scale)
                and self.uncertainty_scale >= 0):
            raise FdmError(f"--uncertainty-scale {self.uncertainty_scale!r}: must be a finite number >= 0")
        for name, low in (("partitions", 0), ("block_size", 1), ("ar_step", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise FdmError(f"--{name.replace('_', '-')} {v!r}: must be an integer >= {low}")


PerFramePlanner = Callable[[int, int, int, int, LevelOptions], Iterable[Job]]


@dataclasses.dataclass(frozen=True)
class PerFrameScheme:
    """A registry entry for a scheme whose jobs carry per-frame levels (needs LevelOptions).
    `options`: the LevelOptions fields besides `steps` its planner reads (None: not declared, as
    a plug-in may leave it); a run that sets any other is refused (`unused_option_problems`)."""

    planner: PerFramePlanner
    options: tuple[str, ...] | None = None

    def __call__(self, length: int, n_obs: int, max_frames: int, step_size: int,
                 options: LevelOptions | None = None) -> Iterator[Job]:
        return iter(self.planner(length, n_obs, max_frames, step_size, options or LevelOptions()))


def context(done: Progress, slots: int) -> list[int]:
    """The `slots` newest clean frames (what a call looks at besides the frames it denoises)."""
    return done.sorted[-slots:] if slots > 0 and len(done) else []
