"""Periodic sampling during training: the EMA model, a sampling scheme, the executor, mp4 files.

Conditioning frames come from the start of the dataset's test split (the train split when there
is none), as `fdm sample` takes them; the videos go to RUN_DIR/samples/step_{N:07d}/. The pieces
are fdm_engine's (`load_conditioning`, `Executor`, `write_outputs`), so training samples are made
exactly as `fdm sample` makes them from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fdm_engine.checkpoint import LoadedDenoiser
from fdm_engine.conditioning import Conditioning, load_conditioning
from fdm_engine.denoisers import default_clip_denoised
from fdm_engine.diffusion.schedule import DiffusionConfig, NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.samplers import make_sampler
from fdm_engine.writer import write_outputs
from sampling_schemes import get_scheme, plan

SAMPLES_DIR = "samples"


@dataclasses.dataclass
class SamplingSetup:
    """What every periodic sampling of a run shares: conditioning, plan settings, sampler."""

    scheme: str
    n_obs: int
    max_frames: int
    cond: Conditioning
    steps: int
    sampler: str
    seed: int
    clip_denoised: bool = True  # as `fdm sample` on this run's checkpoint (denoisers.default_clip_denoised)


def prepare_sampling(cfg, model, model_name: str, diffusion: DiffusionConfig, frames: int) -> SamplingSetup:
    """Check the sampling settings and load the conditioning frames once (FdmError if unusable)."""
    from fdm_engine.sample_run import SampleConfig

    get_scheme(cfg.sample_scheme)
    loaded = LoadedDenoiser(model=model, diffusion=diffusion, model_name=model_name,
                            extra={"dataset": cfg.dataset}, path=Path(cfg.run_dir), used_ema=True)
    split = _conditioning_split(cfg)
    length = cfg.sample_length or _video_length(cfg, split)
    n_obs = cfg.sample_n_obs if cfg.sample_n_obs is not None else min(36, length // 4)
    scfg = SampleConfig(model=str(cfg.run_dir), scheme=cfg.sample_scheme, n_obs=n_obs, length=length,
                        max_frames=frames, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                        num_videos=cfg.sample_videos, seed=cfg.seed, obs=f"{cfg.dataset}:{split}",
                        data_dir=cfg.data_dir)
    cond = load_conditioning(scfg, loaded, list(range(cfg.sample_videos)))
    setup = SamplingSetup(cfg.sample_scheme, n_obs, frames, cond, cfg.sample_steps, cfg.sample_sampler, cfg.seed,
                          default_clip_denoised(loaded))
    if not get_scheme(setup.scheme).adaptive:
        plan(setup.scheme, cond.length, n_obs, frames)  # a bad (scheme, length, n_obs, K) fails now
    return setup


@torch.no_grad()
def sample_videos(setup: SamplingSetup, model, diffusion: DiffusionConfig, out: Path, device) -> list[Path]:
    """Sample the run's videos with `model` (e.g. the EMA copy) into `out`; returns the mp4 paths."""
    schedule = NoiseSchedule(diffusion)
    sampler = make_sampler(setup.sampler, schedule, setup.steps, clip_denoised=setup.clip_denoised)
    executor = Executor(model, sampler, batch_size=max(1, len(setup.cond.given)), seed=setup.seed, device=device)
    state = SamplingState.start(setup.cond.given, setup.cond.length)
    ids = list(range(len(setup.cond.given)))
    if get_scheme(setup.scheme).adaptive:
        from sampling_schemes import AdaptivePlanner

        planner = AdaptivePlanner(setup.scheme, setup.cond.length, setup.n_obs, setup.max_frames,
                                  batch_size=len(ids))
        executor.run_adaptive(planner, state, ids)
    else:
        executor.run(plan(setup.scheme, setup.cond.length, setup.n_obs, setup.max_frames), state, ids)
    out.mkdir(parents=True, exist_ok=True)
    return [write_outputs(out, v, state.buffer[v], ("mp4",))[0] for v in ids]


def samples_dir(run_dir, step: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"step_{step:07d}"


def _conditioning_split(cfg) -> str:
    from fdm_engine.datasets import open_dataset

    try:
        open_dataset(cfg.dataset, cfg.data_dir, split="test")
        return "test"
    except FdmError:
        return "train"


def _video_length(cfg, split: str) -> int:
    from fdm_engine.datasets import open_dataset

    return open_dataset(cfg.dataset, cfg.data_dir, split=split).video_length
