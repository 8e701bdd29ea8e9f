"""AdaptivePlanner: drives an adaptive scheme over a batch of B videos as their frames appear.

    planner = AdaptivePlanner("adaptive-hierarchy-2", length=300, n_obs=36, max_frames=20,
                              batch_size=B, embedder=None)          # None: pixel space
    planner.add_frames(range(36), given)                             # given [B, 36, C, H, W]
    while (jobs := planner.next_jobs()) is not None:                 # B Jobs, same latent frames
        new = run(jobs)                                              # [B, |latent|, C, H, W]
        planner.add_frames(jobs[0].latent, new)
    planner.plan(video=b)                                            # that video's DAG so far

Each job's observed frames differ per video but their number does not, so one step is one batched
network call. Jobs run one after another (each may observe anything done before it); the DAG of
each video grows by one node per step.
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence

import torch

from fdm_common.errors import FdmError
from sampling_schemes.checks import check_args
from sampling_schemes.job import Job, OpenJob
from sampling_schemes.plan import Plan
from sampling_schemes.registry import get_scheme
from sampling_schemes.selection import EmbeddingCache, Embedder, choose_in_time, choose_observed

Chooser = Callable[[OpenJob, Sequence[int], torch.Tensor], list[tuple[int, ...]]]


class AdaptivePlanner:
    """The run-time half of an adaptive scheme: picks each job's observed frames per video."""

    def __init__(self, scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
                 batch_size: int = 1, embedder: Embedder | None = None, choose: Chooser = choose_observed):
        resolved = get_scheme(scheme)
        step_size = check_args(length, n_obs, max_frames, step_size)
        if not resolved.adaptive:
            raise FdmError(f"{scheme} is a static scheme: use plan() (AdaptivePlanner takes adaptive-*)")
        self._setup(list(resolved.open_jobs(length, n_obs, max_frames, step_size)), length, n_obs, batch_size,
                    embedder, choose)

    @classmethod
    def from_open_jobs(cls, open_jobs: Sequence[OpenJob], length: int, n_obs: int, *, batch_size: int = 1,
                       embedder: Embedder | None = None, choose: Chooser | None = None) -> "AdaptivePlanner":
        """A planner over open jobs made once (e.g. one planner per video of a run sharing them)."""
        planner = cls.__new__(cls)
        planner._setup(list(open_jobs), length, n_obs, batch_size, embedder, choose or choose_observed)
        return planner

    def _setup(self, open_jobs, length, n_obs, batch_size, embedder, choose) -> None:
        self.open_jobs: list[OpenJob] = open_jobs
        self.batch_size = batch_size
        self.cache = EmbeddingCache(length, embedder)
        self.choose = choose
        self._plans = [Plan(length, n_obs) for _ in range(batch_size)]
        self._done = list(range(n_obs))  # frames the next job may observe (sorted; must be in the cache)
        self._unchecked = set(self._done)  # done frames not yet seen in the cache (checked once each)

    @property
    def finished(self) -> bool:
        return len(self._plans[0]) == len(self.open_jobs)

    @property
    def done(self) -> frozenset[int]:
        """Frames the next job may observe: the given ones and those of every job handed out."""
        return frozenset(self._done)

    def add_frames(self, indices: Sequence[int], frames: torch.Tensor) -> None:
        """Record new frames (given or just generated) and embed them once. frames [B, F, C, H, W]."""
        self.cache.add_frames(indices, frames)

    def add_embeddings(self, indices: Sequence[int], embeddings: torch.Tensor) -> None:
        """Like add_frames, with embeddings computed elsewhere. embeddings [B, F, D]."""
        self.cache.add_embeddings(indices, embeddings)

    def next_jobs(self) -> list[Job] | None:
        """The next step's jobs, one per video (same latent frames); None when the video is done.

        Raises RuntimeError if frames the step may observe have not been added yet.
        """
        if self.finished:
            return None
        job = self.open_jobs[len(self._plans[0])]
        if job.n_observed == 0:
            observed = [()] * self.batch_size
        else:
            missing = sorted(f for f in self._unchecked if f not in self.cache.filled)
            if missing:
                raise RuntimeError(f"add_frames() for frames {missing[:10]} before asking for the next jobs")
            self._unchecked.clear()
            observed = self.choose(job, self._done, self.cache.table)
        jobs = [job.close(obs) for obs in observed]
        for plan, closed in zip(self._plans, jobs):
            plan.append(closed)
        for f in job.latent:
            bisect.insort(self._done, f)
        self._unchecked.update(job.latent)
        return jobs

    def plan(self, video: int = 0) -> Plan:
        """The DAG of one video's jobs so far."""
        return self._plans[video]


def preview_plan(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None) -> Plan:
    """An adaptive scheme run with time (the frame index) as the embedding: a video-free preview.

    Farthest-point selection in time spreads the observed frames over the video, which shows the
    shape of the scheme; with real frames the choice follows what the video looks like.
    """
    planner = AdaptivePlanner(scheme, length, n_obs, max_frames, step_size, choose=choose_in_time)

    def add(frames: Sequence[int]) -> None:
        if frames:
            planner.add_embeddings(frames, torch.tensor(frames, dtype=torch.float32).view(1, -1, 1))

    add(list(range(n_obs)))
    while (jobs := planner.next_jobs()) is not None:
        add(list(jobs[0].latent))
    return planner.plan()
