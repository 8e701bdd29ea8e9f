"""Adaptive schemes (docs/schemes.md): the latent frames of a static twin, observed frames chosen at run time.

The twin's latent frames never depend on what its jobs observe, so the whole sequence of open
jobs (latent frames + anchors + how many to observe) is known ahead; only the choice among the
done frames waits for the video (see selection.choose_observed and planner.AdaptivePlanner).

Anchors, observed whatever the embeddings say, in priority order:
- the newest done frame (the largest frame of the latest job; max(G) before any job);
- with `local` (hierarchies), also the done frames inside the latent span, the two nearest done
  frames before it and the nearest one after it.
A job observes K - |latent| frames (or every done frame, if fewer are done).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator

from sampling_schemes.job import Job, OpenJob, Progress


@dataclasses.dataclass(frozen=True)
class AdaptiveScheme:
    """A registry entry: `twin` is the static planner whose latent frames are reused."""

    twin: Callable[..., Iterable[Job]]
    local: bool = False

    def open_jobs(self, length: int, n_obs: int, max_frames: int, step_size: int, **params) -> Iterator[OpenJob]:
        done = Progress(length, range(n_obs))
        for job in self.twin(length, n_obs, max_frames, step_size, **params):
            yield self.open(job, done, max_frames)
            done.add(job.latent)

    def open(self, job: Job, done: Progress, max_frames: int) -> OpenJob:
        """The twin's job with its observed frames left open, given the frames done before it."""
        if len(done) == 0:  # unconditional start: nothing to observe
            return OpenJob(job.latent, (), 0, job.level)
        lo, hi = job.latent[0], job.latent[-1]
        anchors = [done.newest]
        if self.local:
            anchors += done.done_in(lo, hi) + done.before(lo, 2) + done.after(hi, 1)
        n = min(max_frames - len(job.latent), len(done))
        return OpenJob(job.latent, tuple(dict.fromkeys(anchors))[:n], n, job.level)
