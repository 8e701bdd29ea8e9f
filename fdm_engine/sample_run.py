"""One sampling run: resolve -> build -> execute -> write (docs/sampling.md).

- resolve: the device, K (frames per job), batch size, videos in flight and precision;
- build: the denoiser with its wrappers (precision, reconstruction guidance, history guidance), the sampler, the
  job source and the executor; `fdm sample` and training-time sampling share this step;
- execute: videos stream through the executor, at most `videos_in_flight` at once;
- write: each video's outputs as soon as it is complete, then it is released.

`fdm sample` keeps the run's state in OUT (sample_state.py): a resumed run ends with exactly the
frames of an uninterrupted one, since noise is a function of (seed, video, job). Under torchrun,
videos are sharded over ranks (rank r takes videos r, r + W, ...), each rank writes its own files
and state, rank 0 writes plan.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from fdm_engine.conditioning import Conditioning, load_conditioning
from fdm_engine.denoisers import default_clip_denoised, load_denoiser
from fdm_engine.diffusion.schedule import NoiseSchedule
from fdm_engine.errors import FdmError, count
from fdm_engine.executor import Counters, Executor, OpenVideo
from fdm_engine.files import write_text_atomic
from fdm_engine.run_lock import run_folder_lock
from fdm_engine.guidance import for_checkpoint
from fdm_engine.history_guidance import with_history_guidance
from fdm_engine.precision import resolve_precision, with_precision
from fdm_engine.sample_config import SampleConfig
from fdm_engine.sample_state import BadState, Manifest, RunState
from fdm_engine.samplers import make_sampler
from fdm_engine.writer import Background, Pixels, video_stem, write_outputs
from sampling_schemes import job_source

__all__ = ["SampleConfig", "Shard", "SamplingRun", "resolve_device", "build", "execute", "run_sampling", "stopped_note", "Interrupted"]


@dataclasses.dataclass
class Shard:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Shard":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def videos(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world))

    def combine(self, summary: dict) -> None:
        """Totals over ranks in rank 0's summary (counts add up; times and rounds take the max)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        for key, op in (("nfe", dist.ReduceOp.SUM), ("network_calls", dist.ReduceOp.SUM),
                        ("rounds", dist.ReduceOp.MAX), ("wall_s", dist.ReduceOp.MAX),
                        ("network_s", dist.ReduceOp.MAX)):
            t = torch.tensor([float(summary[key])], dtype=torch.float64)
            dist.all_reduce(t, op=op)
            summary[key] = type(summary[key])(t.item())
        dist.barrier()


# -- resolve -------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """auto: cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FdmError(f"--device {name}: no CUDA device here (use --device cpu)")
    return device


def resolve_frames(cfg: SampleConfig, loaded) -> int:
    """K: --max-frames, else a fixed-K model's K, else its training clip length, else FDM's 20."""
    model_k = getattr(loaded.model, "max_frames", None)
    k = cfg.max_frames or model_k or getattr(loaded.model.config, "num_frames", None) or 20
    if model_k is not None and k > model_k:
        raise FdmError(f"--max-frames {k} exceeds the model's {model_k} frames")
    return k


# -- build ---------------------------------------------------------------------------------
@dataclasses.dataclass
class SamplingRun:
    """Everything a run needs, built once: what `execute` drives."""

    cfg: SampleConfig
    max_frames: int
    batch_size: int
    videos_in_flight: int
    precision: str
    device: torch.device
    cond: Conditioning
    source: object  # a job source (sampling_schemes.source)
    executor: Executor


def build(cfg: SampleConfig, loaded, device: torch.device) -> SamplingRun:
    """The run's denoiser (network -> precision -> reconstruction guidance -> history guidance),
    sampler, job source and executor."""
    k = resolve_frames(cfg, loaded)
    batch = cfg.batch_size or (32 if device.type == "cuda" else 2)
    precision = resolve_precision(cfg.precision, device, exact=loaded.model_name == "oracle")
    cond = load_conditioning(loaded, n_obs=cfg.n_obs, length=cfg.length, num_videos=cfg.num_videos,
                             seed=cfg.seed, obs=cfg.obs, data_dir=cfg.data_dir)
    schedule = NoiseSchedule(loaded.diffusion)
    clip = default_clip_denoised(loaded) if cfg.clip_denoised is None else cfg.clip_denoised
    sampler = make_sampler(cfg.sampler, schedule, cfg.steps, cfg.spacing, cfg.eta, clip_denoised=clip)
    source = job_source(cfg.scheme, cond.length, cfg.n_obs, k, cfg.step_size, options=level_options(cfg, sampler))
    check_jobs_fit(loaded.model, source, cfg.scheme)
    # vdm/ssm were trained unconditionally: their checkpoints ask for reconstruction guidance.
    denoiser = for_checkpoint(loaded, schedule, seed=cfg.seed,
                              network=with_precision(loaded.model, precision, device))
    denoiser = with_history_guidance(denoiser, cfg.history_guidance, cfg.history_drop)
    executor = Executor(denoiser, sampler, batch_size=batch, seed=cfg.seed, device=device,
                        context_noise=cfg.context_noise)
    return SamplingRun(cfg, k, batch, cfg.videos_in_flight or batch, precision, device, cond, source, executor)


def check_jobs_fit(model, source, scheme: str) -> None:
    """A model that takes only some frame sets (`check_frames`: RaMViD's consecutive frames) against
    a static scheme's jobs, before the run writes anything; an adaptive scheme's jobs exist only as
    it samples, and the model checks them then."""
    check = getattr(model, "check_frames", None)
    if check is None or source.fixed_plan is None:
        return
    for job in source.fixed_plan.jobs:
        try:
            check(sorted(job.observed + job.latent))
        except FdmError as e:
            raise FdmError(f"--scheme {scheme}: {e}") from None


def level_options(cfg: SampleConfig, sampler):
    """The per-frame schemes' settings; they plan on the sampler's grid (its moves per job)."""
    from sampling_schemes.levels import LevelOptions

    return LevelOptions(sampler.nfe, cfg.uncertainty_scale, cfg.partitions, cfg.lookahead,
                        cfg.block_size, cfg.ar_step)


# -- execute -------------------------------------------------------------------------------
def execute(run: SamplingRun, video_ids: list[int], on_video: Callable[[OpenVideo], None],
            state: RunState | None = None, counters: Counters | None = None,
            on_job: Callable[[int], None] | None = None,
            on_round: Callable[[list, Counters], None] | None = None) -> Counters:
    """Stream `video_ids` through the executor; `state` restores videos (its journal is kept by
    `on_round`, see run_sampling)."""

    def open_video(v: int) -> OpenVideo:
        given = run.cond.given(v)
        video = OpenVideo.start(v, given, run.cond.length, run.source.video(given))
        made = state.made(v, tuple(video.buffer.shape[1:])) if state is not None else {}
        video.replay({order: frames for order, (_, frames, _) in made.items()},
                     {order: carried for order, (_, _, carried) in made.items()})
        if on_job:
            for _, frames, _ in made.values():
                on_job(len(frames))
        return video

    return run.executor.stream(video_ids, open_video, run.videos_in_flight, counters=counters,
                               on_round=on_round, on_video=on_video, on_job=on_job)


# -- `fdm sample` ----------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """Ctrl-C during run_sampling; `note`: what OUT kept and how to go on."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


def run_sampling(cfg: SampleConfig, out: Path, resume: bool = False, shard: Shard | None = None,
                 device: torch.device | None = None, progress: bool = True) -> dict:
    """Sample cfg.num_videos videos into `out`; returns the run summary (also in plan.json). A run
    started here that fails (or is interrupted) before its first round is committed leaves no state.
    Ctrl-C raises Interrupted, saying what was kept (only once this run holds OUT: before, OUT's
    contents are not this run's)."""
    shard = shard or Shard.from_env()
    claimed: list[bool] = []
    try:
        return _run_sampling(cfg, Path(out), resume, shard, device, progress, claimed)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            raise
        note = (stopped_note(Path(out), shard, cfg.num_videos) if claimed else
                f"stopped by SIGINT before sampling started: nothing was changed in {out}")
        raise Interrupted(note) from None


def _run_sampling(cfg: SampleConfig, out: Path, resume: bool, shard: Shard, device, progress: bool,
                  claimed: list) -> dict:
    device = device or resolve_device(cfg.device)
    out = Path(out)
    if resume and not out.is_dir():  # before loading the model (claim() checks a folder that is there)
        raise FdmError(f"--resume: {out} does not exist: there is no run to resume there")
    video_ids = shard.videos(cfg.num_videos)
    loaded = load_denoiser(cfg.model, device=device, published=cfg.published_format, flags=cfg.published_flags,
                           config_file=cfg.published_config)
    run = build(cfg, loaded, device)
    with run_folder_lock(out, "--out", f".fdm-sample-rank{shard.rank}.lock", "`fdm sample`"):
        state = claim(out, cfg, resume, shard.rank, video_ids)
        claimed.append(True)
        if state is None:  # --resume of this run, finished: nothing to do
            return {**json.loads((out / "plan.json").read_text()), "already_complete": True}
        finished = set(state.manifest.finished_videos)
        todo = [v for v in video_ids if v not in finished]
        first = {"jobs": state.manifest.first_jobs}
        bar = tqdm(total=run.source.n_jobs * len(video_ids), initial=run.source.n_jobs * len(finished),
                   unit="job", disable=not progress, desc=f"sampling {cfg.scheme}", dynamic_ncols=True)

        def on_job(n_latent: int) -> None:
            bar.update(1)

        # The journal, the outputs and the state's bookkeeping run in order on one background
        # thread while the next round samples (CRC, file writes, fsync and the uint8 conversion
        # release the GIL). A round is handed over only once the previous one is committed, so a
        # kill loses at most the round being committed and the one being sampled.
        background, pixels, written = Background(max_pending=2), {}, {}

        def forget_written() -> None:  # the videos written since the last round: one commit for all
            if written:
                state.finish_videos(dict(written))
                written.clear()

        def journal(records: list, opened: list, counters: dict) -> None:
            forget_written()
            for video in opened:  # its given frames (never changed) as soon as it is open
                pixels[video.video].put(range(run.source.n_obs), video.buffer[:run.source.n_obs], final=True)
            for video, order, job, frames, carried in records:
                state.append(video, order, job, frames, carried)
                if video in pixels:
                    pixels[video].put(job.latent, frames, final=job.schedule is None)
            state.commit(counters)

        def on_round(tasks, c: Counters) -> None:
            background.wait()  # the previous round is committed
            opened = []
            for t in tasks:
                if t.video.video not in pixels:
                    pixels[t.video.video] = Pixels(len(t.video.buffer), tuple(t.video.buffer.shape[1:]))
                    opened.append(t.video)
            # t.frames: views of the batch's output, which nothing changes later (the buffers may)
            records = [(t.video.video, t.order, t.job, t.frames, t.carried) for t in tasks]
            # the counters as this round left them: the next round updates `c` while this commits
            snapshot = dataclasses.asdict(c)
            background.submit(lambda: journal(records, opened, snapshot))

        def on_video(video: OpenVideo) -> None:
            v = video.video
            if v == min(video_ids):
                first["jobs"] = [j.to_dict() for j in video.jobs.plan.jobs]
            plan = first["jobs"] if v == min(video_ids) else None

            def write() -> None:
                made = pixels.pop(v, None)
                write_outputs(out, v, video.buffer, cfg.formats, save_raw=cfg.save_raw, fps=cfg.fps,
                              pixels=None if made is None else made.of(video.buffer))
                written[v] = plan  # its journal goes (forget_written) only once its files are written

            background.submit(write)

        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            counters = execute(run, todo, on_video, state=state, counters=Counters(**state.manifest.counters),
                               on_job=on_job, on_round=on_round)
            background.submit(forget_written)
            background.close()
        except BaseException:  # an error, or Ctrl-C
            with contextlib.suppress(Exception):  # (after a failure on that thread nothing more is committed)
                background.submit(forget_written)  # videos already written are not written again on --resume
            background.close(check=False)  # unwinding: the queued work ends, its error is not lost below
            state.discard_if_unstarted()
            raise
        finally:
            bar.close()
        wall = time.perf_counter() - start
        summary = _summary(run, first["jobs"], counters, wall, shard)
        # this (the sampling) thread's CPU seconds over the same span: with network_cpu_s, the
        # overhead on the critical path, whatever the helper threads and a busy machine add
        summary["sampling_thread_cpu_s"] = time.thread_time() - start_cpu
        summary["state_bytes_written"] = state.bytes_written  # by this process (the benchmarks read it)
        shard.combine(summary)
        if shard.rank == 0:
            write_text_atomic(out / "plan.json", json.dumps(summary, indent=1))
        state.remove()
    return summary


def claim(out: Path, cfg: SampleConfig, resume: bool, rank: int, video_ids: list[int]) -> RunState | None:
    """This rank's state in OUT: a fresh one, or (--resume) the saved one, or None for --resume of
    this run once finished (its plan.json); refuses another run's folder, and --resume of none."""
    path = out / f"state_rank{rank}.pt"
    if path.exists():
        start_over = f"delete {path.name} and {path.stem}.parts in {out} to start over, or choose another --out"
        if not resume:
            raise FdmError(f"{out} holds an unfinished run ({path.name}): pass --resume to continue it, "
                           f"or {start_over}")
        try:
            state = RunState.load(out, rank)
        except (BadState, OSError) as e:
            raise FdmError(f"{e}: {start_over}") from None
        diff = _changed(state.manifest.config, cfg)
        if diff:
            raise FdmError(f"--resume: {path} was started with different settings ({', '.join(diff)}): "
                           f"resume it with those, or {start_over}")
        return state
    if resume:
        finished = _finished_config(out / "plan.json")
        if finished is not None:
            diff = _changed(finished, cfg)
            if diff:
                raise FdmError(f"--resume: {out} holds a finished run with different settings ({', '.join(diff)}): "
                               f"choose another --out for this one")
            # a kill between the ranks' last steps: this rank stopping while another resumes would leave
            # that one waiting for it (Shard.combine) forever; an error ends them all
            unfinished = sorted(p.name for p in out.glob("state_rank*.pt"))
            if unfinished:
                raise FdmError(f"--resume: {out} holds a run finished on rank {rank} but not on every rank "
                               f"({', '.join(unfinished)}), which cannot be resumed; choose another --out")
            return None
    theirs = [p.name for p in (out / "plan.json",) if p.exists()]
    theirs += [p.name for v in video_ids for p in out.glob(video_stem(out, v).name + ".*")]
    if theirs:
        more = f" and {len(theirs) - 3} more" if len(theirs) > 3 else ""
        raise FdmError(f"{out} holds another run ({', '.join(theirs[:3])}{more}): choose another --out, "
                       f"or delete those files to sample there")
    if resume:
        raise FdmError(f"--resume: {out} holds no run to resume (no {path.name}); "
                       f"leave out --resume to start one there")
    return RunState.fresh(out, rank, cfg.to_dict())


def stopped_note(out: Path, shard: Shard, num_videos: int) -> str:
    """What an interrupted `fdm sample` (Ctrl-C) kept in OUT and how to go on, from the state it left."""
    out = Path(out)
    path = out / f"state_rank{shard.rank}.pt"
    try:
        manifest = Manifest.parse(path, path.read_bytes())
    except FileNotFoundError:
        if (out / "plan.json").exists():
            return f"stopped by SIGINT as the run ended: it is complete in {out}"
        return (f"stopped by SIGINT before the first round was done: nothing was kept in {out}; "
                f"run the same command to start again")
    except (BadState, OSError):
        return f"stopped by SIGINT; kept {path}; run the same command with --resume to continue"
    rounds, done = manifest.counters.get("rounds", 0), len(manifest.finished_videos)
    mine = len(shard.videos(num_videos))
    videos = f"{done} of {count(mine, 'video')}" + (f" of rank {shard.rank}" if shard.world > 1 else "")
    return (f"stopped by SIGINT after {count(rounds, 'round')}: {videos} written, the others' "
            f"progress kept in {path}; run the same command with --resume to continue")


def _changed(saved: dict, cfg: SampleConfig) -> list[str]:
    """The settings (those a resume must keep) in which `cfg` differs from a run's saved config."""
    # a setting the run's config predates had its default then (runs resume across versions)
    saved = {**SampleConfig().to_dict(), **saved}
    old = {k: v for k, v in saved.items() if k not in SampleConfig.RESUME_FREE}
    new = {k: v for k, v in cfg.to_dict().items() if k not in SampleConfig.RESUME_FREE}
    return sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))


def _finished_config(plan: Path) -> dict | None:
    """The config in a finished run's plan.json; None if there is none (or it is not a plan of ours)."""
    try:
        config = json.loads(plan.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def _summary(run: SamplingRun, jobs, counters: Counters, wall: float, shard: Shard) -> dict:
    plan = run.source.fixed_plan
    return {
        "config": run.cfg.to_dict(),
        "max_frames": run.max_frames,
        "batch_size": run.batch_size,
        "videos_in_flight": run.videos_in_flight,
        "precision": run.precision,
        "device": str(run.device),
        "world_size": shard.world,
        "jobs": [j.to_dict() for j in plan.jobs] if plan is not None else jobs,
        "nfe": counters.nfe,
        "network_calls": counters.calls,
        "rounds": counters.rounds,
        "wall_s": wall,
        "network_s": counters.network_s,
        # the next round's batches laid out (noise drawn) on a helper thread during the network
        # calls: work the overhead figure does not see when a core is free for it, and partly
        # does when none is
        "noise_ahead_s": run.executor.noise_ahead_s,
        "network_cpu_s": run.executor.model.cpu_seconds,  # the calling thread's CPU seconds in the network (not torch's workers)
        "conditioning": run.cond.source,  # e.g. "carla_no_traffic:test" when taken from the checkpoint
    }
