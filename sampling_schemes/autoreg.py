"""Autoregressive schemes (docs/schemes.md): `autoreg` and `long-range`.

Both generate the S frames after the newest done frame; they differ in what they look at.
A planner is a generator `(length, n_obs, max_frames, step_size) -> Iterator[Job]`.
"""

from __future__ import annotations

from typing import Iterator

from sampling_schemes.job import Job, Progress, start


def next_latent(done: Progress, length: int, step_size: int) -> list[int]:
    """The S frames after the newest (largest) done frame, clipped to T."""
    first = done.sorted[-1] + 1
    return list(range(first, min(first + step_size, length)))


def autoreg(length: int, n_obs: int, max_frames: int, step_size: int) -> Iterator[Job]:
    """Observe the last K-S done frames, generate the next S."""
    first, given = start(length, n_obs, max_frames, spread=False)
    if first is not None:
        yield first
    done = Progress(length, given)
    while not done.complete:
        job = Job.make(done.sorted[-(max_frames - step_size):], next_latent(done, length, step_size))
        done.add(job.latent)
        yield job


def long_range(length: int, n_obs: int, max_frames: int, step_size: int) -> Iterator[Job]:
    """Observe the (K-S)//2 most recent done frames, then given frames from the newest down."""
    first, given = start(length, n_obs, max_frames, spread=False)
    if first is not None:
        yield first
    done = Progress(length, given)
    n_cond = max_frames - step_size
    while not done.complete:
        n_recent = n_cond // 2
        # Published: sorted(done)[-n_recent:], which is *every* done frame when n_recent == 0.
        observed = done.sorted[-n_recent:] if n_recent else []
        chosen = set(observed)
        for g in reversed(given):
            if len(chosen) >= n_cond:
                break
            chosen.add(g)
        job = Job.make(chosen, next_latent(done, length, step_size))
        done.add(job.latent)
        yield job
