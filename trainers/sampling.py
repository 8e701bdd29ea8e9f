"""Periodic sampling during training: the EMA model through `fdm sample`'s own build and execute steps.

Conditioning frames come from the start of the dataset's test split (the train split when there
is none), as `fdm sample` takes them; the videos go to RUN_DIR/samples/step_{N:07d}/. The run is
described by a SampleConfig and built by `fdm_engine.sample_run.build` (the same wrappers,
reconstruction guidance seeded with the run's seed, sampler and job source), so a checkpoint's
training-time samples are what `fdm sample CKPT --seed SEED` makes from it with the same settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fdm_engine.checkpoint import LoadedDenoiser
from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.sample_config import SampleConfig
from fdm_engine.writer import write_outputs

SAMPLES_DIR = "samples"


@dataclasses.dataclass
class SamplingSetup:
    """What every periodic sampling of a run shares: the sampling config and the checkpoint's extra."""

    config: SampleConfig
    model_name: str
    extra: dict


def sample_config(cfg, frames: int) -> SampleConfig:
    """The SampleConfig of a training run's periodic samples (FdmError if unusable)."""
    split = _conditioning_split(cfg)
    length = cfg.sample_length or _video_length(cfg, split)
    n_obs = cfg.sample_n_obs if cfg.sample_n_obs is not None else min(36, length // 4)
    videos = cfg.sample_videos or 1
    return SampleConfig(model=str(cfg.run_dir), scheme=cfg.sample_scheme, n_obs=n_obs, length=length,
                        max_frames=frames, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                        num_videos=videos, batch_size=videos, seed=cfg.seed,
                        obs=f"{cfg.dataset}:{split}", data_dir=cfg.data_dir, formats=("mp4",))


def prepare_sampling(cfg, model, model_name: str, diffusion: DiffusionConfig, frames: int,
                     extra: dict | None = None) -> SamplingSetup:
    """Check the sampling settings and their conditioning once (FdmError if unusable).

    extra: what the trainer records in its checkpoints (e.g. its guidance), read by the build step.
    """
    from fdm_engine.sample_run import build

    setup = SamplingSetup(sample_config(cfg, frames), model_name, {"dataset": cfg.dataset, **(extra or {})})
    build(setup.config, _loaded(setup, model, diffusion), torch.device("cpu"))  # bad sizes fail now
    return setup


@torch.no_grad()
def sample_videos(setup: SamplingSetup, model, diffusion: DiffusionConfig, out: Path, device) -> list[Path]:
    """Sample the run's videos with `model` (e.g. the EMA copy) into `out`; returns the mp4 paths."""
    from fdm_engine.sample_run import build, execute

    run = build(setup.config, _loaded(setup, model, diffusion), torch.device(device))
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[int, Path] = {}

    def write(video) -> None:
        paths[video.video] = write_outputs(out, video.video, video.buffer, setup.config.formats)[0]

    execute(run, list(range(setup.config.num_videos)), write)
    return [paths[v] for v in sorted(paths)]


def _loaded(setup: SamplingSetup, model, diffusion: DiffusionConfig) -> LoadedDenoiser:
    return LoadedDenoiser(model=model, diffusion=diffusion, model_name=setup.model_name, extra=setup.extra,
                            path=Path(setup.config.model), used_ema=True)


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
