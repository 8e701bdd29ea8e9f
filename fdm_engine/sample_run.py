"""One `fdm sample` run: model + conditioning + plan -> executor -> videos on disk, resumable.

The run's state is saved atomically after every round in OUT/state_rank{r}.pt; `resume=True`
continues from it and, since noise is a function of (seed, video, job), ends with exactly the
frames an uninterrupted run makes. Under torchrun, videos are sharded over ranks (rank r takes
videos r, r + W, ...), each rank writes its own files, rank 0 writes plan.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fdm_engine.config import Config
from fdm_engine.conditioning import Conditioning, load_conditioning
from fdm_engine.denoisers import default_clip_denoised, load_denoiser
from fdm_engine.diffusion.schedule import NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.guidance import for_checkpoint
from fdm_engine.files import atomic_write, write_text_atomic
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.samplers import make_sampler
from fdm_engine.writer import write_outputs
from sampling_schemes import get_scheme, plan


@dataclasses.dataclass(frozen=True)
class SampleConfig(Config):
    model: str = ""
    scheme: str = "hierarchy-2"
    n_obs: int = 36
    length: int | None = None  # default: the conditioning videos' length
    max_frames: int | None = None  # default: the model's K (20 for the oracle)
    step_size: int | None = None  # default: max_frames // 2
    sampler: str = "dpm++2m"
    steps: int = 25
    spacing: str = "logsnr"
    eta: float = 0.0
    clip_denoised: bool | None = None  # None: the model's default (denoisers.default_clip_denoised)
    num_videos: int = 1
    batch_size: int = 0  # 0: 2 on CPU (measured best there), 32 on GPU
    seed: int = 0
    obs: str | None = None
    data_dir: str | None = None
    formats: tuple[str, ...] = ("mp4", "npz", "png")
    save_raw: bool = False
    fps: int = 10


FORMATS = ("mp4", "gif", "npz", "png")
# Fields that may differ between a run and its resumption.
_RESUME_FREE = ("formats", "save_raw", "fps", "batch_size")


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


def default_device(shard: Shard) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def check_config(cfg: SampleConfig) -> None:
    bad = [f for f in cfg.formats if f not in FORMATS]
    if bad:
        raise FdmError(f"--format {','.join(bad)} unknown (choose from {','.join(FORMATS)})")
    if cfg.num_videos < 1:
        raise FdmError(f"--num-videos must be >= 1 (got {cfg.num_videos})")
    if cfg.n_obs < 0:
        raise FdmError(f"--n-obs must be >= 0 (got {cfg.n_obs})")
    get_scheme(cfg.scheme)  # unknown scheme -> FdmError before anything heavy


def run_sampling(cfg: SampleConfig, out: Path, resume: bool = False, shard: Shard | None = None,
                 device: torch.device | None = None, progress: bool = True) -> dict:
    """Sample cfg.num_videos videos into `out`; returns the run summary (also in plan.json)."""
    check_config(cfg)
    shard = shard or Shard.from_env()
    device = device or default_device(shard)
    out = Path(out)
    state_path = out / f"state_rank{shard.rank}.pt"
    video_ids = shard.videos(cfg.num_videos)

    loaded = load_denoiser(cfg.model, device=device)
    model_k = getattr(loaded.model, "max_frames", None)
    # A fixed-K model's K, else the clip length it was trained on, else FDM's published 20.
    k = cfg.max_frames or model_k or getattr(loaded.model.config, "num_frames", None) or 20
    if model_k is not None and k > model_k:
        raise FdmError(f"--max-frames {k} exceeds the model's {model_k} frames")
    cond = load_conditioning(cfg, loaded, video_ids)
    schedule = NoiseSchedule(loaded.diffusion)
    clip = default_clip_denoised(loaded) if cfg.clip_denoised is None else cfg.clip_denoised
    sampler = make_sampler(cfg.sampler, schedule, cfg.steps, cfg.spacing, cfg.eta, clip_denoised=clip)
    batch = cfg.batch_size or (32 if device.type == "cuda" else 2)
    # vdm/ssm were trained unconditionally: their checkpoints ask for reconstruction guidance.
    executor = Executor(for_checkpoint(loaded, schedule), sampler, batch_size=batch, seed=cfg.seed, device=device)

    scheme = get_scheme(cfg.scheme)
    if scheme.adaptive:
        from sampling_schemes import AdaptivePlanner
        planner = AdaptivePlanner(cfg.scheme, cond.length, cfg.n_obs, k, cfg.step_size, batch_size=len(video_ids))
        static = None
        n_jobs = len(planner.open_jobs)
    else:
        static = plan(cfg.scheme, cond.length, cfg.n_obs, k, cfg.step_size)
        n_jobs = len(static)

    state = _start_state(cfg, cond, state_path, resume)
    out.mkdir(parents=True, exist_ok=True)

    def save(st: SamplingState) -> None:
        _save_state(state_path, cfg, st)

    done_jobs = sum(len(s) for s in state.finished)
    bar = tqdm(total=n_jobs * len(video_ids), initial=done_jobs, unit="job", disable=not progress,
               desc=f"sampling {cfg.scheme}", dynamic_ncols=True)
    frames_bar = {"frames": int(state.done.sum())}

    def on_job(n_latent: int) -> None:
        frames_bar["frames"] += n_latent
        bar.update(1)
        bar.set_postfix(frames=frames_bar["frames"], refresh=False)

    start = time.perf_counter()
    if static is not None:
        executor.run(static, state, video_ids, on_round=save, on_job=on_job)
    else:
        executor.run_adaptive(planner, state, video_ids, on_round=save, on_job=on_job)
        static = planner.plan(0)
    bar.close()
    wall = time.perf_counter() - start

    for row, vid in enumerate(video_ids):
        write_outputs(out, vid, state.buffer[row], cfg.formats, save_raw=cfg.save_raw, fps=cfg.fps)
    summary = _summary(cfg, static, state, wall, k, batch, shard)
    summary["conditioning"] = cond.source  # e.g. "carla_no_traffic:test" when taken from the checkpoint
    shard.combine(summary)
    if shard.rank == 0:
        write_text_atomic(out / "plan.json", json.dumps(summary, indent=1))
    state_path.unlink(missing_ok=True)
    return summary


def _start_state(cfg: SampleConfig, cond: Conditioning, path: Path, resume: bool) -> SamplingState:
    if path.exists() and not resume:
        raise FdmError(f"{path.parent} holds an unfinished run ({path.name}): pass --resume to continue it, "
                       f"or choose another --out")
    if resume and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        old = {k: v for k, v in saved["config"].items() if k not in _RESUME_FREE}
        new = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new[k])
            raise FdmError(f"--resume: {path} was started with different settings ({', '.join(diff)})")
        return SamplingState.from_dict(saved["state"])
    return SamplingState.start(cond.given, cond.length)


def _save_state(path: Path, cfg: SampleConfig, state: SamplingState) -> None:
    with atomic_write(path) as tmp:
        torch.save({"config": cfg.to_dict(), "state": state.to_dict()}, tmp)


def _summary(cfg, static_plan, state: SamplingState, wall: float, k: int, batch: int, shard: Shard) -> dict:
    return {
        "config": cfg.to_dict(),
        "max_frames": k,
        "batch_size": batch,
        "world_size": shard.world,
        "jobs": [j.to_dict() for j in static_plan.jobs],
        "nfe": state.nfe,
        "network_calls": state.calls,
        "rounds": state.rounds,
        "wall_s": wall,
        "network_s": state.network_s,
    }
