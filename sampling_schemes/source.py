"""Job sources: the one way the executor gets a scheme's jobs, static or adaptive.

    source = job_source("hierarchy-2", length=300, n_obs=36, max_frames=20)
    jobs = source.video(given)            # given [n_obs, C, H, W]: one video's job stream
    while not jobs.complete:
        for order, job in jobs.ready():   # jobs whose observed frames are all done, each once
            jobs.finish(order, frames)    # frames [n_latent, C, H, W]: the job's output
    jobs.plan                             # the DAG of that video's jobs so far

A static scheme's jobs are planned ahead (`source.fixed_plan`, the same for every video); a job is
ready once the jobs that make its observed frames are finished. An adaptive scheme's source hands
out one job at a time and picks its observed frames from the video's frames (`fixed_plan` is None:
there is no plan before the video exists). `order` is the job's position in the video's
sequence: with the run's seed and the video's index it keys the job's noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

from sampling_schemes.job import Job, OpenJob
from sampling_schemes.plan import Plan

if TYPE_CHECKING:  # planning stays free of torch
    import torch


class VideoJobs(Protocol):
    plan: Plan
    complete: bool

    def ready(self) -> list[tuple[int, Job]]: ...

    def finish(self, order: int, frames: torch.Tensor) -> None: ...

    def upcoming(self, orders: Sequence[int]) -> list[tuple[int, Job]] | None:
        """The jobs `ready()` will give once `orders` (the jobs handed out) finish, or None when
        that depends on their frames (adaptive). Changes nothing; lets the executor draw their
        noise while the current jobs run."""
        ...


class StaticSource:
    """Every video runs the same DAG; jobs become ready as their producers finish."""

    def __init__(self, plan: Plan):
        self.fixed_plan = plan
        self.n_obs = plan.n_obs
        self.n_jobs = len(plan)
        self.jobs = plan.jobs
        self._needs = [plan.graph.in_degree(k) for k in range(len(plan))]
        self._successors = [sorted(plan.graph.successors(k)) for k in range(len(plan))]

    def video(self, given: torch.Tensor | None = None) -> "_StaticVideo":
        return _StaticVideo(self)

    def preview(self) -> Plan:
        return self.fixed_plan


class _StaticVideo:
    def __init__(self, source: StaticSource):
        self.source = source
        self.plan = source.fixed_plan
        self._needs = list(source._needs)
        self._queue = [k for k, n in enumerate(self._needs) if n == 0]
        self._left = source.n_jobs

    @property
    def complete(self) -> bool:
        return self._left == 0

    def ready(self) -> list[tuple[int, Job]]:
        jobs = self.source.jobs
        out, self._queue = [(k, jobs[k]) for k in sorted(self._queue)], []
        return out

    def upcoming(self, orders: Sequence[int]) -> list[tuple[int, Job]]:
        needs, out = {}, list(self._queue)
        for order in orders:
            for k in self.source._successors[order]:
                needs[k] = needs.get(k, self._needs[k]) - 1
                if needs[k] == 0:
                    out.append(k)
        return [(k, self.source.jobs[k]) for k in sorted(out)]

    def finish(self, order: int, frames: torch.Tensor | None = None) -> None:
        self._left -= 1
        for k in self.source._successors[order]:
            self._needs[k] -= 1
            if self._needs[k] == 0:
                self._queue.append(k)


class AdaptiveSource:
    """One job at a time per video; its observed frames are chosen from that video's frames."""

    fixed_plan = None

    def __init__(self, open_jobs: Sequence[OpenJob], length: int, n_obs: int, *, embedder=None, choose=None,
                 preview=None):
        self.open_jobs = list(open_jobs)
        self.n_jobs = len(self.open_jobs)
        self.length, self.n_obs = length, n_obs
        self.embedder, self.choose = embedder, choose
        self._preview = preview

    def video(self, given: torch.Tensor) -> "_AdaptiveVideo":
        from sampling_schemes.planner import AdaptivePlanner

        planner = AdaptivePlanner.from_open_jobs(self.open_jobs, self.length, self.n_obs, batch_size=1,
                                                 embedder=self.embedder, choose=self.choose)
        planner.add_frames(range(self.n_obs), given[None])
        return _AdaptiveVideo(planner)

    def preview(self) -> Plan:
        """The scheme with time as the embedding: the shape of its plans without a video."""
        return self._preview()


class _AdaptiveVideo:
    def __init__(self, planner):
        self.planner = planner
        self.plan = planner.plan(0)
        self._running: Job | None = None

    @property
    def complete(self) -> bool:
        return self.planner.finished and self._running is None

    def ready(self) -> list[tuple[int, Job]]:
        if self._running is not None or self.planner.finished:
            return []
        order = len(self.plan)
        self._running = self.planner.next_jobs()[0]
        return [(order, self._running)]

    def upcoming(self, orders: Sequence[int]) -> None:
        return None  # the next job's observed frames are chosen from the frames this one makes

    def finish(self, order: int, frames: torch.Tensor) -> None:
        self.planner.add_frames(self._running.latent, frames[None])
        self._running = None


def job_source(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
               embedder=None, options=None) -> StaticSource | AdaptiveSource:
    """The job source of a scheme name (FdmError for a bad name or bad sizes); `options`
    (sampling_schemes.levels.LevelOptions) shape the per-frame schemes."""
    from sampling_schemes.registry import get_scheme

    return get_scheme(scheme).job_source(length, n_obs, max_frames, step_size, embedder=embedder, options=options)
