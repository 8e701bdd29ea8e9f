"""Jobs: one denoising call over a frame subset, and the frame bookkeeping planners share."""

from __future__ import annotations

import bisect
import dataclasses
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Job:
    """Generate the `latent` frames conditioned on the `observed` ones (absolute frame indices).

    Both tuples are sorted and disjoint; |observed| + |latent| <= K. `level` is the hierarchy level
    that produced the job (0 for non-hierarchical schemes).

    Per-frame noise levels (docs/perframe.md): `schedule` is None for FDM's jobs (every latent
    frame from pure noise to clean over the sampler's whole trajectory). Otherwise it holds, for
    each of the job's network calls plus one, the grid level of every latent frame (rows of
    len(latent)); levels are steps on the sampler's trajectory, `grid` = N is pure noise, 0 clean.
    Row 0 is where the job finds each frame (N: fresh noise; below N: the value an earlier job left),
    the last row where it leaves it; a frame whose level does not change in a row is an input only.
    """

    observed: tuple[int, ...]
    latent: tuple[int, ...]
    level: int = 0
    schedule: tuple[tuple[int, ...], ...] | None = None
    grid: int | None = None

    @classmethod
    def make(cls, observed: Iterable[int], latent: Iterable[int], level: int = 0) -> "Job":
        """A Job from any iterables of ints (sorted, numpy ints turned into Python ints)."""
        return cls(tuple(sorted(int(i) for i in observed)), tuple(sorted(int(i) for i in latent)), level)

    @classmethod
    def staged(cls, observed: Iterable[int], levels: dict[int, Iterable[int]], grid: int, level: int = 0) -> "Job":
        """A per-frame job from {frame: its levels, one per call plus one} (every frame the same count)."""
        latent = sorted(int(f) for f in levels)
        columns = [tuple(int(v) for v in levels[f]) for f in latent]
        rows = tuple(zip(*columns)) if columns else ()
        return cls(tuple(sorted(int(i) for i in observed)), tuple(latent), level, rows, grid)

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(sorted(self.observed + self.latent))

    @property
    def per_frame(self) -> bool:
        return self.schedule is not None

    @property
    def start(self) -> tuple[int, ...]:
        """Each latent frame's level when the job begins (a per-frame job only)."""
        return self.schedule[0]

    @property
    def end(self) -> tuple[int, ...]:
        return self.schedule[-1]

    @property
    def calls(self) -> int | None:
        """Network calls of a per-frame job (None for an FDM job: the sampler's step count)."""
        return None if self.schedule is None else len(self.schedule) - 1

    def moved(self) -> list[int]:
        """Latent frames whose level changes in this job (the others are inputs only)."""
        if self.schedule is None:
            return list(self.latent)
        return [f for f, a, b in zip(self.latent, self.start, self.end) if a != b]

    def to_dict(self) -> dict:
        d = {"observed": list(self.observed), "latent": list(self.latent)}
        if self.schedule is not None:
            d.update(schedule=[list(r) for r in self.schedule], grid=self.grid)
        return d


@dataclasses.dataclass(frozen=True)
class OpenJob:
    """An adaptive job: its latent frames are fixed, its observed frames are chosen at run time.

    `anchors` are done frames that are always observed, in priority order (kept first when there
    are more of them than `n_observed`); `n_observed` is how many observed frames to choose in all.
    """

    latent: tuple[int, ...]
    anchors: tuple[int, ...]
    n_observed: int
    level: int = 0

    def close(self, observed: Iterable[int]) -> Job:
        return Job.make(observed, self.latent, self.level)


class Progress:
    """Which frames of a T-frame video are done, with the nearest-done-frame queries planners use.

    Kept as a bool list plus a sorted list of done frames, so "nearest done before/after i" is a
    bisect rather than a scan over the whole video.
    """

    def __init__(self, length: int, done: Iterable[int] = ()):
        self.length = length
        self._is_done = [False] * length
        self._sorted: list[int] = []
        self.newest: int | None = None  # max frame of the most recent update (the "newest" frame)
        self.add(done)

    def add(self, frames: Iterable[int]) -> None:
        frames = sorted({int(f) for f in frames})
        for f in frames:
            if not self._is_done[f]:
                self._is_done[f] = True
                bisect.insort(self._sorted, f)
        if frames:
            self.newest = frames[-1]

    def __contains__(self, i: int) -> bool:
        return 0 <= i < self.length and self._is_done[i]

    def __len__(self) -> int:
        return len(self._sorted)

    @property
    def sorted(self) -> list[int]:
        return list(self._sorted)

    @property
    def complete(self) -> bool:
        return len(self._sorted) == self.length

    def any_undone_from(self, i: int) -> bool:
        """Whether some frame in [i, T) is undone."""
        i = max(i, 0)
        n_done_from = len(self._sorted) - bisect.bisect_left(self._sorted, i)
        return n_done_from < self.length - i

    def first_undone(self) -> int:
        return next(i for i in range(self.length) if not self._is_done[i])

    def done_in(self, lo: int, hi: int) -> list[int]:
        """Done frames in [lo, hi), ascending."""
        return self._sorted[bisect.bisect_left(self._sorted, lo):bisect.bisect_left(self._sorted, hi)]

    def before(self, i: int, n: int) -> list[int]:
        """Up to n done frames < i, nearest first."""
        k = bisect.bisect_left(self._sorted, i)
        return self._sorted[max(k - n, 0):k][::-1] if n > 0 else []

    def after(self, i: int, n: int) -> list[int]:
        """Up to n done frames > i, nearest first."""
        k = bisect.bisect_right(self._sorted, i)
        return self._sorted[k:k + n] if n > 0 else []

    def gaps(self) -> list[tuple[int, int]]:
        """Maximal runs [a, b] (inclusive) of undone frames, in order."""
        out, start = [], None
        for i, d in enumerate(self._is_done):
            if not d and start is None:
                start = i
            elif d and start is not None:
                out.append((start, i - 1))
                start = None
        if start is not None:
            out.append((start, self.length - 1))
        return out


def start(length: int, n_obs: int, max_frames: int, spread: bool) -> tuple[Job | None, list[int]]:
    """The unconditional first job (None when n_obs > 0) and the given frames G.

    With n_obs = 0 the first job observes nothing and generates K frames: 0..K-1, or with `spread`
    (hierarchies) int(linspace(0, T-1, K)), deduplicated when T < K. Those frames are then G.
    """
    if n_obs > 0:
        return None, list(range(n_obs))
    if spread:
        # numpy's linspace, so the indices match the published planner bit for bit
        frames = sorted({int(i) for i in np.linspace(0, length - 1, max_frames)})
    else:
        frames = list(range(min(max_frames, length)))
    return Job.make((), frames, level=1 if spread else 0), frames
