"""The job executor: runs a plan over V videos, batching every ready job into network calls.

Data flow: plan (sampling_schemes) -> jobs -> here -> run_job (sampler + denoiser) -> frames in
the video buffer. Each round collects every ready (video, job) pair: for a static plan, the jobs
whose DAG predecessors are finished; for an adaptive planner, its next job for every video. The
pairs go through `run_job` in batches of up to `batch_size`.

Determinism: every (video, job) pair draws its noise from its own generator, seeded from
(seed, global video index, job order), so the frames do not depend on the batch size, on how
videos are sharded over ranks, or on where a run was interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from fdm_engine.errors import FdmError
from fdm_engine.samplers import Sampler, run_job
from sampling_schemes import Job, Plan


class TimedModel(torch.nn.Module):
    """Wraps a denoiser to count its calls and the seconds spent inside it."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0
        self.seconds = 0.0

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclasses.dataclass
class SamplingState:
    """Everything a run needs to continue: the buffer, which frames exist, which jobs are done.

    buffer [V, T, C, H, W] (model space), done [V, T] bool, finished[v] = job orders done for
    video v. No RNG state is kept: noise is a function of (seed, video, job order).
    """

    buffer: torch.Tensor
    done: torch.Tensor
    finished: list[set[int]]
    rounds: int = 0
    nfe: int = 0  # network evaluations of single jobs (jobs x steps)
    calls: int = 0  # batched network calls
    network_s: float = 0.0

    @classmethod
    def start(cls, given: torch.Tensor, length: int) -> "SamplingState":
        """given [V, n_obs, C, H, W] -> a state whose first n_obs frames are done."""
        V, n_obs = given.shape[:2]
        buffer = torch.zeros(V, length, *given.shape[2:], dtype=torch.float32)
        buffer[:, :n_obs] = given
        done = torch.zeros(V, length, dtype=torch.bool)
        done[:, :n_obs] = True
        return cls(buffer, done, [set() for _ in range(V)])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["finished"] = [sorted(s) for s in self.finished]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingState":
        return cls(**{**d, "finished": [set(s) for s in d["finished"]]})


def job_seed(seed: int, video: int, order: int) -> int:
    """A distinct 63-bit seed per (run seed, global video index, job order)."""
    return (seed * 1_000_003 + video * 10_007 + order) * 2_654_435_761 % (2**63 - 1)


@dataclasses.dataclass(frozen=True)
class Task:
    video: int  # row in the state's buffer
    order: int  # job order in the plan
    job: Job


class Executor:
    """Runs plans with one model and one sampler.

    model: a denoiser (docs/denoiser.md); sampler: a configured Sampler; video_ids[v] is the
    global index of buffer row v (for seeding); `on_round(state)` is called after each round
    (e.g. to save it).
    """

    def __init__(self, model, sampler: Sampler, *, batch_size: int = 1, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise FdmError(f"--batch-size must be >= 1 (got {batch_size})")
        self.model = TimedModel(model)
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)

    # -- rounds ---------------------------------------------------------------------------
    def ready_tasks(self, plan: Plan, state: SamplingState) -> list[Task]:
        """Unfinished jobs whose observed frames are all done, for every video."""
        done = state.done.tolist()  # Python lists: per-frame tensor indexing here would dominate
        return [Task(v, order, job) for order, job in enumerate(plan.jobs) for v in range(len(done))
                if order not in state.finished[v] and all(done[v][f] for f in job.observed)]

    def run(self, plan: Plan, state: SamplingState, video_ids: list[int] | None = None,
            on_round: Callable[[SamplingState], None] | None = None,
            on_job: Callable[[int], None] | None = None) -> SamplingState:
        """Run a static plan to completion from `state` (fresh or resumed)."""
        video_ids = video_ids or list(range(state.buffer.shape[0]))
        while tasks := self.ready_tasks(plan, state):
            # One round: the ready set is fixed before any of it runs, so rounds follow the DAG.
            self.run_tasks(tasks, state, video_ids, on_job)
            state.rounds += 1
            if on_round:
                on_round(state)
        unfinished = [v for v in range(len(state.finished)) if len(state.finished[v]) < len(plan)]
        if unfinished:
            raise RuntimeError(f"plan stalled for videos {unfinished}: some job observes a frame no job makes")
        return state

    def run_adaptive(self, planner, state: SamplingState, video_ids: list[int] | None = None,
                     on_round=None, on_job=None) -> SamplingState:
        """Drive an AdaptivePlanner (one job per video per round), replaying finished jobs first."""
        video_ids = video_ids or list(range(state.buffer.shape[0]))
        n_obs = planner.plan(0).n_obs
        planner.add_frames(range(n_obs), state.buffer[:, :n_obs])
        order = 0
        while (jobs := planner.next_jobs()) is not None:
            latent = list(jobs[0].latent)
            if order not in state.finished[0]:  # not yet run (on resume, replay what was)
                self.run_tasks([Task(v, order, job) for v, job in enumerate(jobs)], state, video_ids, on_job)
                state.rounds += 1
                if on_round:
                    on_round(state)
            planner.add_frames(latent, state.buffer[:, latent])
            order += 1
        return state

    # -- one batch of jobs ----------------------------------------------------------------
    def run_tasks(self, tasks: list[Task], state: SamplingState, video_ids: list[int], on_job=None) -> None:
        calls, seconds = self.model.calls, self.model.seconds
        for start in range(0, len(tasks), self.batch_size):
            chunk = tasks[start:start + self.batch_size]
            out = self.run_batch(chunk, state.buffer, video_ids)
            for task, frames in zip(chunk, out):
                latent = list(task.job.latent)
                state.buffer[task.video, latent] = frames
                state.done[task.video, latent] = True
                state.finished[task.video].add(task.order)
                if on_job:
                    on_job(len(latent))
            state.nfe += len(chunk) * self.sampler.nfe  # network evaluations per job
        # Deltas, so counts stay right across a resumed run.
        state.calls += self.model.calls - calls
        state.network_s += self.model.seconds - seconds

    def run_batch(self, tasks: list[Task], buffer: torch.Tensor, video_ids: list[int]) -> list[torch.Tensor]:
        """One batched run_job over jobs of possibly different sizes (padded to the largest).

        Slots: observed frames, then latent frames, then padding (valid = False).
        Returns each job's latent frames [n_latent, C, H, W] (CPU, float32).
        """
        B = len(tasks)
        F = max(len(t.job.observed) + len(t.job.latent) for t in tasks)
        frame_shape = buffer.shape[2:]
        x_obs = torch.zeros(B, F, *frame_shape)
        noise = torch.zeros(B, F, *frame_shape)
        indices = torch.zeros(B, F, dtype=torch.long)
        observed = torch.zeros(B, F, dtype=torch.bool)
        valid = torch.zeros(B, F, dtype=torch.bool)
        gens = []
        for b, t in enumerate(tasks):
            n_o, n_l = len(t.job.observed), len(t.job.latent)
            indices[b, :n_o + n_l] = torch.tensor(t.job.observed + t.job.latent)
            x_obs[b, :n_o] = buffer[t.video, list(t.job.observed)]
            observed[b, :n_o] = True
            valid[b, :n_o + n_l] = True
            g = torch.Generator().manual_seed(job_seed(self.seed, video_ids[t.video], t.order))
            noise[b, n_o:n_o + n_l] = torch.randn(n_l, *frame_shape, generator=g)
            gens.append((g, n_o, n_l))

        def step_noise(_step: int) -> torch.Tensor:
            z = torch.zeros(B, F, *frame_shape)
            for b, (g, n_o, n_l) in enumerate(gens):
                z[b, n_o:n_o + n_l] = torch.randn(n_l, *frame_shape, generator=g)
            return z.to(self.device)

        dev = self.device
        out = run_job(self.model, self.sampler, noise.to(dev), indices.to(dev), observed.to(dev),
                      x_obs.to(dev), valid=None if bool(valid.all()) else valid.to(dev), step_noise=step_noise)
        out = out.float().cpu()
        return [out[b, len(t.job.observed):len(t.job.observed) + len(t.job.latent)] for b, t in enumerate(tasks)]
