"""Diffusion Forcing's scheduling matrices over a sliding window (docs/perframe.md):
`df-pyramid`, `df-trapezoid`, `df-autoregressive`.

The video is made in chunks of S frames (the first of an unconditional start: K frames). A chunk
is one job: it looks at the K - |chunk| newest clean frames and runs a scheduling matrix, row m
giving frame j of the chunk the level clip(N + offset_j - m, 0, N): frame j waits offset_j calls at
pure noise, then goes down one level per call. The offsets:

- pyramid: offset_j = int(j * u), u = --uncertainty-scale (later frames stay noisier);
- trapezoid: offset_j = int(min(j, h - 1 - j) * u) (both ends of the chunk lead);
- autoregressive: offset_j = j * N (one frame at a time, each seeing the previous ones clean).

u = 0 is the full-sequence case: the whole chunk at one level, FDM's job.
"""

from __future__ import annotations

from typing import Callable, Iterator

from sampling_schemes.job import Job, Progress
from sampling_schemes.levels import LevelOptions, context

Offsets = Callable[[int, LevelOptions], list[int]]


def pyramid(h: int, o: LevelOptions) -> list[int]:
    return [int(j * o.uncertainty_scale) for j in range(h)]


def trapezoid(h: int, o: LevelOptions) -> list[int]:
    return [int(min(j, h - 1 - j) * o.uncertainty_scale) for j in range(h)]


def autoregressive(h: int, o: LevelOptions) -> list[int]:
    return [j * o.steps for j in range(h)]


def chunk_levels(frames: list[int], offsets: list[int], steps: int) -> dict[int, list[int]]:
    """{frame: its level at each row} of one chunk's scheduling matrix."""
    height = steps + max(offsets)
    return {f: [min(max(steps + off - m, 0), steps) for m in range(height + 1)] for f, off in zip(frames, offsets)}


def forcing(offsets: Offsets):
    def planner(length: int, n_obs: int, max_frames: int, step_size: int, options: LevelOptions) -> Iterator[Job]:
        done = Progress(length, range(n_obs))
        first = n_obs
        while first < length:
            h = min(max_frames if first == 0 else step_size, length - first)
            frames = list(range(first, first + h))
            levels = chunk_levels(frames, offsets(h, options), options.steps)
            yield Job.staged(context(done, max_frames - h), levels, options.steps)
            done.add(frames)
            first += h

    planner.__name__ = f"df_{offsets.__name__}"
    return planner


df_pyramid = forcing(pyramid)
df_trapezoid = forcing(trapezoid)
df_autoregressive = forcing(autoregressive)
