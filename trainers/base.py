"""What a trainer is: one paper's conditioning regime on top of the shared loop.

A trainer turns loader clips into training batches (which frames are observed, which are
generated, which slots are padding), states its paper's defaults, and says how its model is
sampled during training. Everything else (optimiser, EMA, checkpoints, DDP, logging) is the loop's.
Trainers are registered by model name in TRAINERS; plug-ins use the entry-point group
`fdm.trainers`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from fdm_engine.registry import Registry

TRAINERS: Registry = Registry("trainer", group="fdm.trainers")


@dataclasses.dataclass
class Batch:
    """One micro-batch in the denoiser contract's terms (docs/denoiser.md)."""

    x0: torch.Tensor  # [B, F, C, H, W] clean frames
    frame_indices: torch.Tensor  # [B, F] int64
    observed: torch.Tensor  # [B, F] bool: conditioning frames (clean, level 0, no loss)
    valid: torch.Tensor  # [B, F] bool: False on padding slots (no loss, isolated in attention)

    def to(self, device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in dataclasses.astuple(self)))


class Trainer:
    """Base trainer: unconditional training on consecutive frames (the VDM regime).

    Subclasses override `defaults`, `options` and `make_batch` as their paper does.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig fields (the paper's regime)
    options: ClassVar[tuple[str, ...]] = ()  # trainer-specific TrainConfig fields it reads
    dataset_presets: ClassVar[dict[str, str]] = {}  # dataset -> default preset
    conditional: ClassVar[bool] = True  # whether the model learns p(latent | observed) itself

    def __init__(self, cfg, model):
        self.cfg = cfg
        self.model = model
        # Slots per example: the model's fixed frame count (FDM's K), else its clip length.
        self.frames = int(getattr(model, "max_frames", None) or model.config.num_frames)

    @classmethod
    def model_config(cls, cfg, model_config: dict[str, Any]) -> dict[str, Any]:
        """The model config of a run (a hook for options that shape the model): here
        --clip-length sets the model's `num_frames`."""
        if cfg.clip_length is not None and "num_frames" in model_config:
            model_config = {**model_config, "num_frames": cfg.clip_length}
        return model_config

    @classmethod
    def resolved_clip_length(cls, cfg, model_config: dict[str, Any]) -> int | None:
        """The run's clip length once the model config is known."""
        return model_config.get("num_frames", cfg.clip_length)

    def clip_length(self) -> int:
        """Frames per loader clip."""
        return self.frames

    def level_draw(self) -> str:
        """How the loss draws timesteps (fdm_engine.diffusion.loss.LEVEL_DRAWS): one per clip."""
        return "per-clip"

    def make_batch(self, clips: torch.Tensor, rng: np.random.Generator) -> Batch:
        """clips [B, T, C, H, W] -> a Batch; every frame generated, none observed."""
        B, F = clips.shape[:2]
        return Batch(clips, torch.arange(F).expand(B, F).clone(),
                     torch.zeros(B, F, dtype=torch.bool), torch.ones(B, F, dtype=torch.bool))

    def checkpoint_extra(self) -> dict[str, Any]:
        """What checkpoints record for samplers beyond the model (e.g. how to condition it); periodic
        sampling reads the same, so it wraps the model as `fdm sample` does."""
        return {}


def selection_batch(clips: torch.Tensor, selections, frames: int, padding_from=None) -> Batch:
    """Assemble a Batch from per-example FrameSelections.

    clips [B, T, C, H, W]; selections[b] picks frames of clip b (sorted, at most `frames`);
    slots are the selected frames in index order, then padding. `padding_from(b, n)` gives the
    (clip row, frame indices) of n padding frames for example b.
    """
    B, _, C, H, W = clips.shape
    x0 = clips.new_zeros(B, frames, C, H, W)
    indices = torch.zeros(B, frames, dtype=torch.long)
    observed = torch.zeros(B, frames, dtype=torch.bool)
    valid = torch.zeros(B, frames, dtype=torch.bool)
    for b, sel in enumerate(selections):
        chosen = sorted(sel.observed + sel.latent)
        n = len(chosen)
        x0[b, :n] = clips[b, chosen]
        indices[b, :n] = torch.tensor(chosen)
        observed[b, :n] = torch.tensor([i in set(sel.observed) for i in chosen])
        valid[b, :n] = True
        if n < frames:
            row, pad = padding_from(b, frames - n)
            x0[b, n:] = clips[row, pad]
            indices[b, n:] = torch.tensor(pad)
    return Batch(x0, indices, observed, valid)
