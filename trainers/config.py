"""`TrainConfig`: every setting of a training run; its fields are `fdm train`'s options.

A field left at None takes its value, in increasing priority, from `DEFAULTS`, the trainer's own
defaults (its paper's regime), the preset, a `--config FILE.json`, then the command line.
`resolve` fills them in; the resolved config is what a run stores (RUN_DIR/config.json and every
checkpoint), so `--config RUN_DIR/config.json` reproduces a run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from fdm_engine.config import Config
from fdm_engine.diffusion.loss import LEVEL_DRAWS
from fdm_engine.errors import FdmError
from fdm_engine.sample_config import SampleConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    # What and where
    dataset: str | None = None
    data_dir: str | None = None
    model: str | None = None  # fdm | vdm | ramvid | ssm (default: the preset's, else fdm)
    preset: str | None = None  # default: the model's preset for the dataset, else "tiny"
    model_config: dict = dataclasses.field(default_factory=dict)  # overrides of the preset's model config
    run_dir: str | None = None  # default: runs/{dataset}-{model}-{preset}
    # Diffusion
    diffusion_steps: int | None = None
    noise_schedule: str | None = None  # linear | cosine
    prediction: str | None = None  # eps | x0 | v
    # Data
    clip_length: int | None = None  # frames per training window (FDM: T; others: the model's frames)
    num_workers: int | None = None  # loader processes (default: 0 on CPU, 4 on GPU)
    # Optimisation
    steps: int | None = None
    batch_size: int | None = None  # examples per optimiser step, over all ranks and micro-batches
    grad_accum: int | None = None  # micro-batches per step and rank
    lr: float | None = None
    warmup_steps: int | None = None  # linear warm-up from 0 to lr
    decay_steps: int | None = None  # linear decay from lr to 0 over the last N steps; 0 = constant
    optimizer: str | None = None  # adamw | adam
    weight_decay: float | None = None
    grad_clip: float | None = None  # max global grad norm; 0 = off
    ema_decay: float | None = None
    ema_warmup: bool | None = None  # decay min(ema_decay, (1 + n) / (10 + n)) at update n
    autocast: str | None = None  # auto (bf16 on CUDA, off elsewhere) | bf16 | off
    seed: int | None = None
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu
    # Trainer-specific (None where a trainer does not use them)
    uncondition_rate: float | None = None  # ramvid
    max_num_mask_frames: int | None = None  # ramvid
    temporal_layer: str | None = None  # ssm: attn | bi-s4d
    guidance_weight: float | None = None  # vdm, ssm: reconstruction guidance w_r when sampling
    noise_levels: str | None = None  # fdm: per-clip (FDM; also when unset) | per-frame (Diffusion Forcing)
    # Bookkeeping
    save_every: int | None = None
    keep_checkpoints: int | None = None  # newest N kept; 0 keeps all
    log_every: int | None = None
    sample_every: int | None = None  # 0 = never
    sample_scheme: str | None = None
    sample_n_obs: int | None = None  # default: min(36, length // 4)
    sample_length: int | None = None  # default: min(test video length, 4 * clip frames)
    sample_sampler: str | None = None
    sample_steps: int | None = None
    sample_videos: int | None = None


DEFAULTS: dict[str, Any] = dict(
    diffusion_steps=1000, noise_schedule="linear", prediction="eps",
    steps=100_000, batch_size=8, grad_accum=1, lr=1e-4, warmup_steps=0, decay_steps=0, optimizer="adamw",
    weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999, ema_warmup=True, autocast="auto", seed=0,
    save_every=5000, keep_checkpoints=3, log_every=10, sample_every=50_000, sample_scheme=SampleConfig.scheme,
    sample_sampler=SampleConfig.sampler, sample_steps=SampleConfig.steps, sample_videos=1,
)

# Trainer options and the trainers that read them (anything else must leave them unset).
TRAINER_OPTIONS = ("uncondition_rate", "max_num_mask_frames", "temporal_layer", "guidance_weight", "noise_levels")

# Fields a resumed run may change; every other field must match the run's config.json.
RESUME_FREE = ("steps", "decay_steps", "save_every", "keep_checkpoints", "log_every", "sample_every", "sample_scheme",
               "sample_n_obs", "sample_length", "sample_sampler", "sample_steps", "sample_videos",
               "num_workers", "device", "data_dir", "run_dir")

OPTIMIZERS = ("adamw", "adam")
AUTOCAST = ("auto", "bf16", "off")


def set_fields(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of `cfg` that are set (not None, and model_config when not empty)."""
    out = {k: v for k, v in cfg.to_dict().items() if v is not None}
    if not out.get("model_config"):
        out.pop("model_config", None)
    return out


def merge(*configs: TrainConfig) -> TrainConfig:
    """Later configs' set fields win; model_config dicts merge key by key."""
    values: dict[str, Any] = {}
    model_config: dict[str, Any] = {}
    for cfg in configs:
        fields = set_fields(cfg)
        model_config.update(fields.pop("model_config", {}))
        values.update(fields)
    return TrainConfig.from_dict({**values, "model_config": model_config})


def load_config_file(path) -> TrainConfig:
    """A TrainConfig (any subset of its fields) from a JSON file; FdmError names the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FdmError(f"--config {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise FdmError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise FdmError(f"--config {path}: must hold a JSON object of TrainConfig fields")
    try:
        return TrainConfig.from_dict(data)
    except FdmError as e:
        raise FdmError(f"--config {path}: {e}") from None
    except TypeError as e:
        raise FdmError(f"--config {path}: {e}") from None


def check(cfg: TrainConfig) -> None:
    """Range checks on a resolved config; FdmError names the option."""
    positive = ("steps", "batch_size", "grad_accum", "save_every", "log_every", "diffusion_steps",
                "sample_steps", "sample_videos")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise FdmError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(cfg, name)})")
    for name in ("warmup_steps", "decay_steps", "keep_checkpoints", "sample_every", "grad_clip", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise FdmError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(cfg, name)})")
    if not cfg.lr > 0:
        raise FdmError(f"--lr must be > 0 (got {cfg.lr})")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise FdmError(f"--ema-decay must be in [0, 1) (got {cfg.ema_decay})")
    if cfg.optimizer not in OPTIMIZERS:
        raise FdmError(f"--optimizer must be one of {', '.join(OPTIMIZERS)} (got {cfg.optimizer!r})")
    if cfg.autocast not in AUTOCAST:
        raise FdmError(f"--autocast must be one of {', '.join(AUTOCAST)} (got {cfg.autocast!r})")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise FdmError(f"--num-workers must be >= 0 (got {cfg.num_workers})")
    if cfg.noise_levels is not None and cfg.noise_levels not in LEVEL_DRAWS:
        raise FdmError(f"--noise-levels must be one of {', '.join(LEVEL_DRAWS.names())} (got {cfg.noise_levels!r})")
    if cfg.clip_length is not None and cfg.clip_length < 1:
        raise FdmError(f"--clip-length must be >= 1 (got {cfg.clip_length})")
