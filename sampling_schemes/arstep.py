"""`ar-step`: SkyReels-V2's asynchronous diffusion-forcing schedule (docs/perframe.md).

Frames come in blocks of B (`--block-size`); a block starts (at pure noise) `--ar-step` calls after
the previous one and then goes down one level per call, so at any call the blocks in progress sit
ar_step levels apart. A block waits while starting it would put more than S (--step-size) frames
in progress, so K - S slots stay for clean context (before any frame is clean: K frames, as the
other schemes' unconditional start).
ar_step = 0 starts blocks together (as many as fit: FDM-like chunks). Each call moves every frame in
progress and looks at the newest clean frames in its free slots; consecutive calls with the same
frames (no block starting or finishing) are one job, so multistep samplers keep their history there.
"""

from __future__ import annotations

from typing import Iterator

from fdm_common.errors import FdmError
from sampling_schemes.job import Job, Progress
from sampling_schemes.levels import LevelOptions, context


def ar_step(length: int, n_obs: int, max_frames: int, step_size: int, options: LevelOptions) -> Iterator[Job]:
    N, B, a = options.steps, options.block_size, options.ar_step
    if B > step_size:
        raise FdmError(f"--block-size {B}: more than --step-size {step_size} (the frames in progress at once; "
                       f"the other K - S slots are kept for clean context)")
    blocks = [list(range(f, min(f + B, length))) for f in range(n_obs, length, B)]
    done = Progress(length, range(n_obs))
    level: dict[int, int] = {}  # frames in progress -> level
    run: dict[int, list[int]] = {}  # the current job's rows so far, per frame
    started, last = 0, None
    call = 0
    while started < len(blocks) or level:
        new = []
        while (started < len(blocks) and (last is None or call >= last + a)
               and len(level) + len(new) + len(blocks[started]) <= (step_size if len(done) else max_frames)):
            new += blocks[started]
            started, last = started + 1, call
            if a > 0:
                break
        if new and run:  # the frames change: close the job so far
            yield Job.staged(context(done, max_frames - len(run)), run, N)
            run = {}
        for f in new:
            level[f] = N
        for f in level:
            run.setdefault(f, [level[f]]).append(level[f] - 1)
            level[f] -= 1
        finished = [f for f, v in level.items() if v == 0]
        if finished:
            yield Job.staged(context(done, max_frames - len(run)), run, N)
            run = {}
            for f in finished:
                del level[f]
            done.add(finished)
        call += 1
