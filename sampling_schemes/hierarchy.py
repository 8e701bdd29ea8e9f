"""`hierarchy-N` (docs/schemes.md): coarse-to-fine generation over N levels, as in the FDM paper.

Level 1 is one job spreading S frames over the whole video; level l then walks the video with
stride(l) = int(((T - |G|)/(S-1)) ** ((N-l)/(N-1))), which is 1 at the last level, so the last
level fills every remaining frame in order. Each job observes the done frames inside its span,
then up to half of the rest after it and the remainder before it (nearest first).

Frame sets per job match the published planner, including its quirk that a job re-planned with
S-1 (when fewer than 2 observed slots are left) keeps the cursor reset to 0 by a level change.
Fixed flaws: duplicate observed indices when n_obs < K-S (all of G is observed instead);
duplicate latent indices when level 1 has fewer than S frames to spread over (deduplicated);
division by zero at S = 1, also reached by re-planning from S = 2 (the stride base divides by
max(S-1, 1)); a zero stride when T - |G| < S - 1 (stride is at least 1); a crash when a new
level's first grid point lies past the last undone frame (the level advances again); and an
error when even S = 1 leaves fewer than 2 observed slots (the job observes what fits).
Checked once (outside the test suite) against a port of the published planner on ~3,000 random
(T, n_obs, K, S, N) where it runs without those flaws: identical frame sets for every job.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from sampling_schemes.job import Job, Progress, start


@dataclasses.dataclass
class Walk:
    """Where the planner is: the current level and the last frame generated at it."""

    level: int
    cursor: int


@dataclasses.dataclass(frozen=True)
class Setup:
    length: int
    max_frames: int
    n_levels: int
    given: tuple[int, ...]

    def stride(self, level: int, step_size: int) -> int:
        base = (self.length - len(self.given)) / max(step_size - 1, 1)
        exponent = max(self.n_levels - level, 0) / (self.n_levels - 1)
        return max(1, int(base ** exponent))


def hierarchy(length: int, n_obs: int, max_frames: int, step_size: int, n: int = 2) -> Iterator[Job]:
    """The N-level hierarchy; `n` is N (>= 2)."""
    first, given = start(length, n_obs, max_frames, spread=True)
    if first is not None:
        yield first
    setup = Setup(length, max_frames, n, tuple(given))
    done = Progress(length, given)
    # After an unconditional start the cursor sits at T-1, so level 1 is skipped at once.
    walk = Walk(level=1, cursor=max(given))
    while not done.complete:
        job = plan_job(setup, walk, done, step_size)
        done.add(job.latent)
        yield job


def plan_job(setup: Setup, walk: Walk, done: Progress, step_size: int) -> Job:
    """The next job; advances `walk`. Re-plans with S-1 while fewer than 2 observed slots remain."""
    T, K, S = setup.length, setup.max_frames, step_size
    idx = walk.cursor + setup.stride(walk.level, S)
    if not done.any_undone_from(idx):
        walk.level, walk.cursor = next_level(setup, walk.level, done, S), 0
        idx = done.first_undone() - 1 + setup.stride(walk.level, S)
    if walk.level == 1:
        latent = sorted({int(i) for i in np.linspace(max(setup.given) + 1, T - 0.001, S)})
    else:
        latent = collect(done, idx, setup.stride(walk.level, S), S, T)
    inside = done.done_in(latent[0], latent[-1])
    room = (K - S) - len(inside)  # observed slots left for frames before and after the span
    if room < 2 and S > 1:
        return plan_job(setup, walk, done, S - 1)
    after = done.after(latent[-1], room // 2)
    n_before = room - len(after)
    if walk.level == 1:
        before = spread(setup.given, n_before)
    else:
        before = done.before(latent[0], n_before)
    walk.cursor = latent[-1]
    return Job.make(inside + after + before, latent, walk.level)


def next_level(setup: Setup, level: int, done: Progress, step_size: int) -> int:
    """The first level after `level` whose walk, started at the first undone frame, lands on an
    undone frame. Strides only shrink as the level grows (and are 1 from level N on), so this is
    a bisection: hierarchy-1000000 costs what hierarchy-10 does instead of a step per level."""
    start = done.first_undone() - 1
    lo, hi = level + 1, max(level + 1, setup.n_levels)
    while lo < hi:
        mid = (lo + hi) // 2
        if done.any_undone_from(start + setup.stride(mid, step_size)):
            hi = mid
        else:
            lo = mid + 1
    return lo


def collect(done: Progress, idx: int, stride: int, step_size: int, length: int) -> list[int]:
    """Up to S undone frames from idx on: take an undone frame and jump by stride, else step by 1."""
    latent = []
    while len(latent) < step_size and idx < length:
        if idx in done:
            idx += 1
        else:
            latent.append(idx)
            idx += stride
    return latent


def spread(given: tuple[int, ...], n: int) -> list[int]:
    """n given frames evenly spread over [0, max(G)]: int(linspace(0, max(G)+0.999, n)).

    All of G when it has at most n frames (the published linspace repeats indices then).
    """
    if n >= len(given):
        return list(given)
    return [int(i) for i in np.linspace(0, max(given) + 0.999, n)]
