"""The job executor: streams videos through a job source, batching every ready job into network calls.

Data flow: job source (sampling_schemes.source) -> ready jobs -> here -> run_job (sampler +
denoiser) -> frames in the video's buffer. At most `in_flight` videos are open at once; a round
collects every ready (video, job) pair of the open videos and runs them through `run_job` in
batches of up to `batch_size`. After the round, `on_round` sees what it made (e.g. to journal it)
and each video that is complete goes to `on_video` (e.g. to write it) and is released; the next
videos of the queue take its place. Memory is (in-flight videos) x (one video), whatever the
number of videos.

Determinism: every (video, job) pair draws its noise from its own generator, seeded from
(seed, global video index, job order), so the frames do not depend on the batch size, on the
in-flight count, on how videos are sharded over ranks, or on where a run was resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Iterable

import torch

from fdm_engine.errors import FdmError
from fdm_engine.history_guidance import guidance_drop, job_nfe
from fdm_engine.limits import check_memory
from fdm_engine.samplers import Sampler, run_job
from fdm_engine.samplers.history import FrameState
from sampling_schemes import Job, Plan
from sampling_schemes.source import StaticSource, VideoJobs


class TimedModel(torch.nn.Module):
    """Wraps a denoiser to count its calls and the seconds spent inside it (wall, and the calling
    thread's CPU seconds: on a shared machine wall time includes waiting for a core)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def forward(self, *args, **kwargs):
        start, cpu = time.perf_counter(), time.thread_time()
        out = self.model(*args, **kwargs)
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)  # the network's time, not its launch's
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.thread_time() - cpu
        self.calls += 1
        return out



def check_buffer(videos: int, length: int, frame: tuple) -> None:
    """The float32 frames of `videos` whole videos must fit in memory (one line, not an allocator error)."""
    check_memory(videos * length * math.prod(frame) * 4, f"{videos} video(s) of {length} frames of "
                 f"{'x'.join(map(str, frame))}", "lower --length or the frame size")

@dataclasses.dataclass
class Counters:
    rounds: int = 0
    nfe: int = 0  # network evaluations of single jobs (jobs x steps)
    calls: int = 0  # batched network calls
    network_s: float = 0.0


NOT_STARTED = -1  # a frame's level before any job touched it (its job draws its noise); a frame
# a job left at pure noise (an input only) has level N: it holds that noise, and its next job goes on from it


def start_levels(done: torch.Tensor) -> torch.Tensor:
    """[.., T] int levels from done flags: 0 (clean) where done, NOT_STARTED elsewhere."""
    return torch.where(done, 0, NOT_STARTED).to(torch.int32)


@dataclasses.dataclass
class OpenVideo:
    """One video in flight: its buffer [T, C, H, W] (model space), which frames exist, its jobs.

    Per frame, its current value (buffer) and level (levels [T]: 0 clean, g > 0 left at grid level
    g by a per-frame job, NOT_STARTED before any job); done = level 0; and for frames left part-way
    the sampler's multistep state (history: frame -> FrameState), which their next job goes on
    from (docs/perframe.md).
    """

    video: int  # global index (seeds the noise)
    buffer: torch.Tensor
    done: torch.Tensor  # [T] bool
    jobs: VideoJobs
    finished: set[int] = dataclasses.field(default_factory=set)  # job orders done
    pending: list[tuple[int, Job]] = dataclasses.field(default_factory=list)  # ready, not yet run
    levels: torch.Tensor | None = None  # [T] int32; None: from `done`
    history: dict[int, FrameState] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.levels is None:
            self.levels = start_levels(self.done)

    @classmethod
    def start(cls, video: int, given: torch.Tensor, length: int, jobs: VideoJobs) -> "OpenVideo":
        check_buffer(1, length, given.shape[1:])
        buffer = torch.zeros(length, *given.shape[1:], dtype=torch.float32)
        buffer[:len(given)] = given
        done = torch.zeros(length, dtype=torch.bool)
        done[:len(given)] = True
        return cls(video, buffer, done, jobs)

    def record(self, order: int, job: Job, frames: torch.Tensor,
               carried: dict[int, FrameState] | None = None) -> None:
        """A finished job's frames [n_latent, C, H, W]; `carried`: the sampler state of the frames
        it left part-way (None: keep what the video holds, as an in-memory replay does)."""
        put(self.buffer, job.latent, frames)
        if job.schedule is None:
            put(self.levels, job.latent, 0)
            put(self.done, job.latent, True)
        else:
            end = torch.tensor(job.end, dtype=torch.int32)
            put(self.levels, job.latent, end)
            put(self.done, job.latent, end == 0)
            for f, e in zip(job.latent, job.end):
                if e == 0 or (carried is not None and f not in carried):
                    self.history.pop(f, None)
                elif carried is not None:
                    self.history[f] = carried[f]
        self.finished.add(order)
        self.jobs.finish(order, frames)

    def frames(self, indices: tuple[int, ...]) -> torch.Tensor:
        """The buffer's frames at `indices` (a view when they are consecutive)."""
        return take(self.buffer, indices)

    def check_start(self, job: Job) -> None:
        """A per-frame job must find its frames where its plan says (a planner bug otherwise)."""
        if job.schedule is None:
            return
        now = self.levels[list(job.latent)].tolist()
        if any(n != a and not (n == NOT_STARTED and a == job.grid) for n, a in zip(now, job.start)):
            raise RuntimeError(f"video {self.video}: job finds frames {list(job.latent)} at levels {now} "
                               f"({NOT_STARTED}: not started), its plan expects {list(job.start)}")

    def replay(self, made: dict[int, torch.Tensor] | None = None,
               carried: dict[int, dict[int, FrameState]] | None = None) -> None:
        """Hand the job source the jobs already done (on resume), in an order it accepts.

        made: job order -> its frames; None: the orders in `finished`, frames from the buffer.
        carried: job order -> the sampler state of the frames it left part-way (the journal's).
        """
        known = set(self.finished) if made is None else set(made)
        while True:
            ready = self.jobs.ready()
            redo = [(o, j) for o, j in ready if o in known]
            self.pending += [(o, j) for o, j in ready if o not in known]
            if not redo:
                return
            for order, job in redo:
                self.record(order, job, self.frames(job.latent) if made is None else made[order],
                            None if carried is None else carried.get(order, {}))

    @property
    def complete(self) -> bool:
        return self.jobs.complete


@functools.lru_cache(maxsize=65536)  # a plan's few distinct index tuples, met every round
def _span(indices: tuple[int, ...]) -> slice | None:
    """The slice of consecutive indices (as the frames of autoregressive and most hierarchy jobs
    are: then frames are views of the buffer, not copies), else None."""
    if indices and all(j - i == 1 for i, j in zip(indices, indices[1:])):
        return slice(indices[0], indices[-1] + 1)
    return None


def take(t: torch.Tensor, indices: tuple[int, ...], out: torch.Tensor | None = None) -> torch.Tensor:
    """t[indices] along dim 0: a view for consecutive indices, else a copy; copied into `out` if given."""
    span = _span(indices)
    if span is None:
        return torch.index_select(t, 0, torch.tensor(indices, dtype=torch.long), out=out)
    return t[span] if out is None else out.copy_(t[span])


def put(t: torch.Tensor, indices: tuple[int, ...], value) -> None:
    """t[indices] = value along dim 0."""
    span = _span(indices)
    t[list(indices) if span is None else span] = value


def job_seed(seed: int, video: int, order: int) -> int:
    """A distinct 63-bit seed per (run seed, global video index, job order)."""
    return (seed * 1_000_003 + video * 10_007 + order) * 2_654_435_761 % (2**63 - 1)


@dataclasses.dataclass
class Task:
    video: OpenVideo
    order: int  # job order in the video's sequence
    job: Job
    frames: torch.Tensor | None = None  # once run: its latent frames (a view of the batch's output)
    carried: dict[int, FrameState] | None = None  # once run: the sampler state of frames it left part-way


RoundHook = Callable[[list[Task], Counters], None]


@dataclasses.dataclass
class Batch:
    """One network call's inputs but the observed frames: slots are observed, then latent (holding
    the job's starting noise), then padding (zeros, valid = False)."""

    keys: tuple  # ((video, order), ...) of its jobs
    sizes: list  # (observed, latent) slots per job
    x: torch.Tensor  # [B, F, C, H, W]
    indices: torch.Tensor  # [B, F] int64
    observed: torch.Tensor  # [B, F] bool
    valid: torch.Tensor | None  # [B, F] bool; None: no padding
    context: torch.Tensor | None  # [B, F, C, H, W] context noise on observed slots (--context-noise)
    gens: list  # per job: its generator (continues with the step noise), observed and latent slots


class BatchAhead:
    """Lays out the next round's batches (their starting noise drawn, the rest zeroed) on a helper
    thread while this round's network runs: the draws are a fifth of the oracle's time at 32 px,
    and a fresh batch-sized tensor costs its page faults. `start(chunks)` after a round's jobs are
    known, `collect()` before the next round, `take(keys)` in it (None where the round's jobs are
    not those foreseen). Each job still draws from its own generator, so the frames are the same
    as laid out inline."""

    def __init__(self, layout: Callable):
        from concurrent.futures import ThreadPoolExecutor

        self.layout = layout
        self.seconds = 0.0  # the helper thread's CPU time (overlapped with the network)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fdm-noise")
        self._future = None
        self._ready: dict = {}

    def start(self, chunks: list[list[tuple[int, int, Job]]], frame_shape: tuple) -> None:
        """chunks: the (video, order, job) of each batch the next round will run."""
        if chunks:
            self._future = self._pool.submit(self._lay_out, chunks, frame_shape)

    def _lay_out(self, chunks, frame_shape) -> dict:
        start = time.thread_time()
        out = {}
        for chunk in chunks:
            batch = self.layout(chunk, frame_shape)
            out[batch.keys] = batch
        self.seconds += time.thread_time() - start
        return out

    def collect(self) -> None:
        future, self._future = self._future, None
        self._ready = future.result() if future is not None else {}

    def take(self, keys: tuple) -> Batch | None:
        return self._ready.pop(keys, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Executor:
    """Runs job sources with one model and one sampler.

    model: a denoiser (docs/denoiser.md); sampler: a configured Sampler.
    """

    def __init__(self, model, sampler: Sampler, *, batch_size: int = 1, seed: int = 0,
                 device: str | torch.device = "cpu", context_noise: float | None = None):
        if batch_size < 1:
            raise FdmError(f"--batch-size must be >= 1 (got {batch_size})")
        self.model = TimedModel(model)
        self.history_drop = guidance_drop(model)
        self._ahead: BatchAhead | None = None
        self.noise_ahead_s = 0.0  # CPU seconds of noise drawn ahead on the helper thread
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.context_noise = check_context_noise(context_noise, sampler)

    # -- streaming ------------------------------------------------------------------------
    def stream(self, videos: Iterable[int], open_video: Callable[[int], OpenVideo], in_flight: int,
               counters: Counters | None = None, on_round: RoundHook | None = None,
               on_video: Callable[[OpenVideo], None] | None = None,
               on_job: Callable[[int], None] | None = None) -> Counters:
        """Run every video of `videos` to completion, at most `in_flight` open at once.

        open_video(v) makes (or restores) video v; on_round(tasks, counters) follows every round;
        on_video(video) gets each complete video, which is then released.
        """
        counters = counters or Counters()
        queue, active = iter(videos), []
        self._ahead = BatchAhead(self.layout)
        try:
            return self._stream(queue, active, open_video, in_flight, counters, on_round, on_video, on_job)
        finally:
            self._ahead.close()
            self.noise_ahead_s += self._ahead.seconds
            self._ahead = None

    def _stream(self, queue, active, open_video, in_flight, counters, on_round, on_video, on_job) -> Counters:
        while True:
            while len(active) < max(in_flight, 1) and (v := next(queue, None)) is not None:
                active.append(open_video(v))
            complete = [a for a in active if a.complete]
            for video in complete:
                active.remove(video)
                if on_video:
                    on_video(video)
            if complete:
                continue  # refill before the next round
            if not active:
                return counters
            tasks = self.collect(active)
            if not tasks:
                stalled = [a.video for a in active]
                raise RuntimeError(f"plan stalled for videos {stalled}: some job observes a frame no job makes")
            self._ahead.collect()  # this round's batches, laid out during the last one
            upcoming = self.upcoming(tasks)
            self._ahead.start([upcoming[i:i + self.batch_size] for i in range(0, len(upcoming), self.batch_size)],
                              tuple(active[0].buffer.shape[1:]))
            self.run_tasks(tasks, counters, on_job)
            counters.rounds += 1
            if on_round:
                on_round(tasks, counters)

    @staticmethod
    def collect(active: list[OpenVideo]) -> list[Task]:
        """The round's tasks: every ready job of every open video (fixed before any of it runs)."""
        tasks = []
        for video in active:
            video.pending += video.jobs.ready()
            tasks += [Task(video, order, job) for order, job in video.pending]
            video.pending = []
        return tasks

    @staticmethod
    def upcoming(tasks: list[Task]) -> list[tuple[int, int, Job]]:
        """(video, order, job) of the jobs the open videos will run next round, in the order
        `collect` will give them, where their sources know them now (static schemes)."""
        orders: dict[int, tuple[OpenVideo, list[int]]] = {}
        for t in tasks:
            orders.setdefault(id(t.video), (t.video, []))[1].append(t.order)
        keys = []
        for video, done in orders.values():
            upcoming = getattr(video.jobs, "upcoming", None)
            jobs = upcoming(done) if upcoming is not None else None
            keys += [(video.video, o, j) for o, j in jobs or ()]
        return keys

    # -- all videos in memory (evaluation, training samples, tests) -------------------------
    def run(self, source, state: "SamplingState", video_ids: list[int] | None = None,
            on_round: Callable[["SamplingState"], None] | None = None,
            on_job: Callable[[int], None] | None = None) -> "SamplingState":
        """Run a job source (or a static Plan) over every row of `state` (fresh or resumed)."""
        if isinstance(source, Plan):
            source = StaticSource(source)
        video_ids = video_ids or list(range(state.buffer.shape[0]))

        def open_row(row: int) -> OpenVideo:
            video = OpenVideo(video_ids[row], state.buffer[row], state.done[row],
                              source.video(state.buffer[row, :source.n_obs]), state.finished[row],
                              levels=state.levels[row], history=state.history[row])
            video.replay()
            return video

        def round_done(tasks, counters):
            if on_round:
                on_round(state)

        self.stream(range(len(video_ids)), open_row, len(video_ids), counters=state, on_round=round_done,
                    on_job=on_job)
        return state

    def run_adaptive(self, planner, state: "SamplingState", video_ids=None, on_round=None, on_job=None):
        """An AdaptivePlanner's scheme through `run` (kept for callers that made the planner)."""
        from sampling_schemes.source import AdaptiveSource

        source = AdaptiveSource(planner.open_jobs, planner.cache.length, planner.plan(0).n_obs,
                                embedder=planner.cache.embedder, choose=planner.choose)
        return self.run(source, state, video_ids, on_round, on_job)

    # -- one round's jobs -------------------------------------------------------------------
    def run_tasks(self, tasks: list[Task], counters: Counters, on_job=None) -> None:
        calls, seconds = self.model.calls, self.model.seconds
        nfe = self.sampler.nfe  # once a round: it concatenates the trajectory
        for start in range(0, len(tasks), self.batch_size):
            chunk = tasks[start:start + self.batch_size]
            for task in chunk:
                task.video.check_start(task.job)
            for task, (frames, carried) in zip(chunk, self.run_batch(chunk)):
                task.video.record(task.order, task.job, frames, carried)
                task.frames, task.carried = frames, carried
                if on_job:
                    on_job(len(task.job.latent))
            # network evaluations per job: the sampler's moves, or a per-frame job's calls; a
            # history-guided call with history to drop is two (fdm_engine/history_guidance.py)
            counters.nfe += sum(job_nfe(t.job, nfe, self.history_drop) for t in chunk)
        # Deltas, so counts stay right across a resumed run.
        counters.calls += self.model.calls - calls
        counters.network_s += self.model.seconds - seconds

    def layout(self, jobs: list[tuple[int, int, Job]], frame_shape: tuple) -> Batch:
        """A batch of (video, order, job) with each job's starting noise drawn into its latent
        slots (`fresh_slots`; jobs of different sizes padded to the largest); no frame of any
        video is read."""
        B = len(jobs)
        sizes = [(len(j.observed), len(j.latent)) for _, _, j in jobs]
        F = max(n_o + n_l for n_o, n_l in sizes)
        # zeros, not empty: its pages are touched here (ahead, on the helper thread), not by the
        # observed frames' copy on the sampling thread; padding slots stay zero
        x = torch.zeros(B, F, *frame_shape)
        indices = torch.zeros(B, F, dtype=torch.long)
        observed = torch.zeros(B, F, dtype=torch.bool)
        valid = torch.zeros(B, F, dtype=torch.bool)
        context = None if self.context_noise is None else torch.zeros(B, F, *frame_shape)
        gens = []
        for b, ((video, order, job), (n_o, n_l)) in enumerate(zip(jobs, sizes)):
            indices[b, :n_o + n_l] = torch.tensor(job.observed + job.latent)
            observed[b, :n_o] = True
            valid[b, :n_o + n_l] = True
            g = torch.Generator().manual_seed(job_seed(self.seed, video, order))
            fresh = fresh_slots(job)
            span = _span(tuple(fresh))
            if span is not None:  # FDM jobs: every latent slot, as always
                torch.randn(len(fresh), *frame_shape, generator=g, out=x[b, n_o + span.start:n_o + span.stop])
            elif fresh:
                x[b, [n_o + i for i in fresh]] = torch.randn(len(fresh), *frame_shape, generator=g)
            if context is not None:  # its own generator: the job's other noise stays as without it
                gc = torch.Generator().manual_seed(job_seed(self.seed, video, order) ^ CONTEXT_KEY)
                context[b, :n_o] = torch.randn(n_o, *frame_shape, generator=gc)
            gens.append((g, n_o, n_l))
        keys = tuple((video, order) for video, order, _ in jobs)
        return Batch(keys, sizes, x, indices, observed, None if bool(valid.all()) else valid, context, gens)

    def run_batch(self, tasks: list[Task]) -> list[tuple[torch.Tensor, dict[int, FrameState] | None]]:
        """One batched run_job over jobs of possibly different sizes (padded to the largest).

        The batch (laid out ahead on the helper thread, or here) gets its observed frames and the
        current values of frames an earlier job left, with the sampler state the videos hold for
        them, from the videos.
        Returns per job its latent frames [n_latent, C, H, W] (CPU, float32; views of one tensor)
        and, for a per-frame job, the sampler state of the frames it leaves part-way (None: the
        sampler keeps none).
        """
        frame_shape = tuple(tasks[0].video.buffer.shape[1:])
        keys = tuple((t.video.video, t.order) for t in tasks)
        batch = self._ahead.take(keys) if self._ahead is not None else None
        if batch is None:
            batch = self.layout([(t.video.video, t.order, t.job) for t in tasks], frame_shape)
        x, sizes, gens = batch.x, batch.sizes, batch.gens
        slots = []  # (b, f, sampler state) of the frames carried on
        for b, (t, (n_o, n_l)) in enumerate(zip(tasks, sizes)):
            take(t.video.buffer, t.job.observed, out=x[b, :n_o])
            if t.job.schedule is not None:  # frames an earlier job left go on from there
                now = t.video.levels[list(t.job.latent)].tolist()
                held = [i for i, level in enumerate(now) if level != NOT_STARTED]
                x[b, [n_o + i for i in held]] = t.video.buffer[[t.job.latent[i] for i in held]]
                slots += [(b, n_o + i, t.video.history[f]) for i, f in enumerate(t.job.latent)
                          if f in t.video.history]
        B, F = batch.observed.shape

        def step_noise(_step: int) -> torch.Tensor:
            z = torch.zeros(B, F, *frame_shape)
            for b, (g, n_o, n_l) in enumerate(gens):
                z[b, n_o:n_o + n_l] = torch.randn(n_l, *frame_shape, generator=g)
            return z.to(self.device)

        dev = self.device
        levels = batch_levels([t.job for t in tasks], F, self.sampler)
        out = run_job(self.model, self.sampler, x.to(dev), batch.indices.to(dev), batch.observed.to(dev),
                      None, valid=None if batch.valid is None else batch.valid.to(dev), step_noise=step_noise,
                      levels=levels, context_level=self.context_noise,
                      context_noise=None if batch.context is None else batch.context.to(dev),
                      carry=FrameState.gather(slots, B, F, dev) if slots else None)
        state = self.sampler.carried() if levels is not None else None
        out = out.float().cpu()
        return [(out[b, n_o:n_o + n_l], left_part_way(t.job, state, b, n_o))
                for b, (t, (n_o, n_l)) in enumerate(zip(tasks, sizes))]


def fresh_slots(job: Job) -> list[int]:
    """Latent slots (positions in job.latent) whose starting noise the job draws: every one of an
    FDM job, the ones a per-frame job finds at pure noise (a frame an earlier job already showed
    at pure noise keeps that value instead; the draw depends on the plan alone, so it can be made
    ahead)."""
    if job.schedule is None:
        return list(range(len(job.latent)))
    return [i for i, a in enumerate(job.start) if a == job.grid]


def left_part_way(job: Job, state: FrameState | None, b: int, n_o: int) -> dict[int, FrameState] | None:
    """The sampler state of the frames a per-frame job (batch row b, latent slots from n_o) leaves
    between noise and clean (None: an FDM job, or a sampler without multistep state)."""
    if state is None or job.schedule is None:
        return None
    return {f: state.slot(b, n_o + i) for i, (f, e) in enumerate(zip(job.latent, job.end)) if e != 0}


CONTEXT_KEY = 0x5DEECE66D  # the context noise's generator: the job's seed with these bits flipped


def check_context_noise(level: float | None, sampler: Sampler) -> float | None:
    """--context-noise T: a diffusion timestep in [0, N_train) (None: observed frames stay clean)."""
    if level is None:
        return None
    n = sampler.schedule.num_steps
    if not 0 <= level < n:
        raise FdmError(f"--context-noise {level}: must be a timestep in [0, {n})")
    return float(level)


def grid_timesteps(sampler: Sampler, grid: int) -> torch.Tensor:
    """[grid + 1] timesteps of grid levels 0..grid (level l = trajectory[grid - l]; level 0 is -1, clean)."""
    traj = sampler.trajectory()
    if len(traj) - 1 != grid:
        raise FdmError(f"the plan's per-frame levels are for {grid} sampler steps but the sampler makes "
                       f"{len(traj) - 1}: plan with --steps {len(traj) - 1}")
    if bool((traj[1:] >= traj[:-1]).any()):
        raise FdmError(f"{type(sampler).__name__} visits a level twice per step; per-frame schemes need a "
                       "sampler with one level per network call (ddpm, ddim, dpm++2m, unipc, ...)")
    return traj.flip(0)


def batch_levels(jobs: list[Job], width: int, sampler: Sampler) -> torch.Tensor | None:
    """[R + 1, B, F] timesteps of a batch with per-frame jobs (None: all FDM jobs, the sampler's own
    trajectory). Slots: observed, latent, padding; shorter jobs hold their last row."""
    if not any(j.per_frame for j in jobs):
        return None
    grid = next(j.grid for j in jobs if j.per_frame)
    timesteps = grid_timesteps(sampler, grid)
    rows = [torch.tensor(j.schedule, dtype=torch.long) if j.per_frame else
            torch.arange(grid, -1, -1)[:, None].expand(-1, len(j.latent)) for j in jobs]
    R = max(len(r) for r in rows)
    out = torch.full((R, len(jobs), width), -1.0, dtype=torch.float64)
    for b, (job, r) in enumerate(zip(jobs, rows)):
        r = torch.cat([r, r[-1:].expand(R - len(r), -1)])
        n_o = len(job.observed)
        out[:, b, n_o:n_o + len(job.latent)] = timesteps[r]
    return out


class SamplingState(Counters):
    """Every video of a run in memory: buffer [V, T, C, H, W] (model space), done [V, T] bool,
    finished[v] = job orders done for video v, levels [V, T] and history[v] (frame -> sampler
    state, see OpenVideo), and the run's counters. No RNG state is kept: noise is a function of
    (seed, video, job order)."""

    def __init__(self, buffer, done, finished, rounds=0, nfe=0, calls=0, network_s=0.0, levels=None,
                 history=None):
        super().__init__(rounds, nfe, calls, network_s)
        self.buffer, self.done, self.finished = buffer, done, finished
        self.levels = start_levels(done) if levels is None else levels  # [V, T] (see OpenVideo)
        self.history: list[dict[int, FrameState]] = history or [{} for _ in range(len(finished))]

    @classmethod
    def start(cls, given: torch.Tensor, length: int) -> "SamplingState":
        """given [V, n_obs, C, H, W] -> a state whose first n_obs frames are done."""
        V, n_obs = given.shape[:2]
        check_buffer(V, length, given.shape[2:])
        buffer = torch.zeros(V, length, *given.shape[2:], dtype=torch.float32)
        buffer[:, :n_obs] = given
        done = torch.zeros(V, length, dtype=torch.bool)
        done[:, :n_obs] = True
        return cls(buffer, done, [set() for _ in range(V)])

    def to_dict(self) -> dict:
        return {"buffer": self.buffer, "done": self.done, "finished": [sorted(s) for s in self.finished],
                "levels": self.levels, "history": self.history,
                **dataclasses.asdict(Counters(self.rounds, self.nfe, self.calls, self.network_s))}

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingState":
        return cls(**{**d, "finished": [set(s) for s in d["finished"]]})
