"""`fifo`: FIFO-Diffusion's diagonal denoising (docs/perframe.md), with latent partitions and lookahead.

A queue holds the frames in progress, oldest (cleanest) first, at consecutive levels: each diagonal
step moves every queued frame down one level, lets the head leave clean once it reaches 0 and takes
one new frame in at pure noise (level N), so the queue holds up to N frames. A step is p calls
(`--partitions`, default: the fewest with at most K frames each): the queue is cut from its noisy
tail into pieces of ceil(N / p) frames, each one job. With `--lookahead` each piece is halved and a
call moving one half also sees the ceil(piece / 2) cleaner queue frames before it, unchanged (FIFO-Diffusion's
lookahead denoising: twice the calls, and every noisier frame sees cleaner neighbours); its jobs run
noisiest first, so every frame is read before it moves. Free slots of a call (up to K) go to the
newest clean frames.
"""

from __future__ import annotations

import math
from typing import Iterator

from fdm_common.errors import FdmError
from sampling_schemes.job import Job, Progress
from sampling_schemes.levels import LevelOptions, context


def piece_size(options: LevelOptions, max_frames: int) -> int:
    N, p = options.steps, options.partitions
    p = p or math.ceil(N / max_frames)
    width = math.ceil(N / p)
    if width > max_frames:
        raise FdmError(f"--partitions {p}: {N} steps in {p} partitions is {width} frames per call, more than "
                       f"--max-frames {max_frames}; use --partitions >= {math.ceil(N / max_frames)}")
    return width


def fifo(length: int, n_obs: int, max_frames: int, step_size: int, options: LevelOptions) -> Iterator[Job]:
    N = options.steps
    width = piece_size(options, max_frames)
    move = math.ceil(width / 2) if options.lookahead and width > 1 else width
    done = Progress(length, range(n_obs))
    queue: dict[int, int] = {}  # frame -> level, oldest first
    incoming = n_obs
    while incoming < length or queue:
        if incoming < length:
            queue[incoming] = N
            incoming += 1
        frames = list(queue)
        for end in range(len(frames), 0, -move):  # noisiest piece first
            moving = frames[max(end - move, 0):end]
            seen = frames[max(end - move - (width - move), 0):max(end - move, 0)]
            levels = {f: [queue[f], queue[f] - 1] for f in moving}
            levels.update({f: [queue[f], queue[f]] for f in seen})
            yield Job.staged(context(done, max_frames - len(levels)), levels, N)
        for f in frames:
            queue[f] -= 1
        while queue and queue[frames[0]] == 0:
            del queue[frames[0]]
            done.add([frames[0]])
            frames.pop(0)
