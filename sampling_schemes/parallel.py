"""`hierarchy-N-parallel`: a hierarchy whose level-l jobs observe only frames of levels < l.

The published hierarchies walk the video one job at a time, each job looking at the one before,
so their DAG is a chain (depth = number of jobs). Here every job of a level is planned from the
frames done *before* the level started, so a whole level is one round of batched network calls.

- Level 1 (skipped after an unconditional start, whose first job already spans the video): the
  hierarchy's level-1 job, S frames spread over [max(G)+1, T).
- Level l >= 2: for each gap (maximal run of undone frames):
  - a gap that fits one job (at most u = min(S, K-2) frames) is filled outright, so its frames
    see both done neighbours;
  - a longer gap gets m evenly spaced keyframes, m = min(u, max(m_min, g // stride(l))):
    stride(l) is hierarchy-N's stride, so N sets how dense the keyframes of each level are, and
    m_min = ceil((g - u) / (u + 1)) is the fewest keyframes that leave every sub-gap fillable.
  Consecutive gaps' frames are packed into one job while it keeps at most S latent frames and
  room for each gap's done neighbours ("anchors": the frames just before and after it); the rest
  of the K slots go to the done frames nearest the job's latent frames.

Gaps shrink by a factor of about u+1 per level, so the depth grows like log(T)/log(S+1): at
T=300, n_obs=36, K=20, S=10 hierarchy-2-parallel runs in 3 rounds (hierarchy-2: 27).
"""

from __future__ import annotations

import bisect
import math
from typing import Iterator

from sampling_schemes.hierarchy import Setup, Walk, plan_job
from sampling_schemes.job import Job, Progress, start


def hierarchy_parallel(length: int, n_obs: int, max_frames: int, step_size: int, n: int = 2) -> Iterator[Job]:
    """The N-level parallel hierarchy; `n` is N (>= 2). Jobs come level by level."""
    first, given = start(length, n_obs, max_frames, spread=True)
    setup = Setup(length, max_frames, n, tuple(given))
    done = Progress(length, given)
    if first is None:
        first = plan_job(setup, Walk(level=1, cursor=max(given)), done, step_size)
        done.add(first.latent)
    yield first
    level = 2
    while not done.complete:
        jobs = level_jobs(setup, done, level, step_size)
        yield from jobs
        for job in jobs:  # only now: jobs of one level never see each other's frames
            done.add(job.latent)
        level += 1


def level_jobs(setup: Setup, done: Progress, level: int, step_size: int) -> list[Job]:
    """All jobs of one level, planned from the frames done before it."""
    K = setup.max_frames
    unit = min(step_size, K - 2) if K > 2 else step_size  # leave a slot for each neighbour
    stride = setup.stride(level, step_size)
    units = [gap_frames(a, b, unit, stride) for a, b in done.gaps()]
    return [observe(group, done, K, level) for group in pack(units, done, step_size, K)]


def gap_frames(a: int, b: int, unit: int, stride: int) -> list[int]:
    """The frames of gap [a, b] generated at this level: all of it, or evenly spaced keyframes."""
    g = b - a + 1
    if g <= unit:
        return list(range(a, b + 1))
    m_min = math.ceil((g - unit) / (unit + 1))
    m = min(unit, max(m_min, g // stride))
    # Integer spacing (g+1)/(m+1) >= 1, so the positions are distinct and inside [a, b].
    return [a - 1 + (j * (g + 1)) // (m + 1) for j in range(1, m + 1)]


def anchors(frames: list[int], done: Progress) -> list[int]:
    """The done neighbours of a gap's frames: nearest done frame before and after (if any)."""
    return done.before(frames[0], 1) + done.after(frames[-1], 1)


def pack(units: list[list[int]], done: Progress, step_size: int, max_frames: int) -> list[list[list[int]]]:
    """Group consecutive units into jobs of <= S latent frames that still fit their anchors in K."""
    groups: list[list[list[int]]] = []
    n_latent, held = 0, set()
    for frames in units:
        extra = set(anchors(frames, done))
        fits = n_latent + len(frames) <= step_size and n_latent + len(frames) + len(held | extra) <= max_frames
        if groups and fits:
            groups[-1].append(frames)
            n_latent, held = n_latent + len(frames), held | extra
        else:
            groups.append([frames])
            n_latent, held = len(frames), extra
    return groups


def observe(group: list[list[int]], done: Progress, max_frames: int, level: int) -> Job:
    """A job generating the group's frames: anchors first, then the nearest done frames."""
    latent = sorted(f for frames in group for f in frames)
    budget = max_frames - len(latent)
    chosen = list(dict.fromkeys(a for frames in group for a in anchors(frames, done)))
    candidates = {c for frames in group for c in done.before(frames[0], budget) + done.after(frames[-1], budget)}
    by_distance = sorted(candidates - set(chosen), key=lambda c: (_distance(c, latent), c))
    return Job.make((chosen + by_distance)[:budget], latent, level)


def _distance(frame: int, latent: list[int]) -> int:
    """Distance from a frame to the nearest of the sorted latent frames."""
    k = bisect.bisect_left(latent, frame)
    return min(abs(frame - latent[j]) for j in (k - 1, k) if 0 <= j < len(latent))
