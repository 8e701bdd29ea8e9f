"""FDM trainer (Harvey et al. 2022; docs/training.md): random observed/latent frame subsets of long clips.

Each example is a T-frame clip; the mask sampler (docs/training.md) picks up to K frames, some observed (clean,
level 0) and some latent (noised, in the loss). Unused slots are filled with frames of another
clip of the batch, marked invalid so attention keeps them apart and the loss ignores them. The
loss averages over latent frames only (the published code divided by K).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from fdm_engine.errors import FdmError
from trainers.base import TRAINERS, Batch, Trainer, selection_batch
from trainers.masks import fdm_selection
from trainers.presets import Preset, register_preset


@TRAINERS.register("fdm")
class FDMTrainer(Trainer):
    name = "fdm"
    # improved-diffusion / FDM: AdamW lr 1e-4, EMA 0.9999, 1000 linear steps, eps, no warm-up.
    defaults: ClassVar[dict] = dict(lr=1e-4, optimizer="adamw", ema_decay=0.9999)
    # --noise-levels per-frame: Diffusion-Forcing training, an independent level per frame
    # (fdm_engine/diffusion/loss.py); the observed/latent masks are FDM's either way. Unset means
    # per-clip, so configs recorded before the option existed still resolve to themselves.
    options: ClassVar[tuple] = ("noise_levels",)
    dataset_presets: ClassVar[dict] = {"carla_no_traffic": "fdm-carla", "minerl": "fdm-minerl",
                                       "mazes_cwvae": "fdm-mazes"}
    conditional = True

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        if cfg.clip_length is None:
            raise FdmError("--clip-length is required for --model fdm (frames per training clip, T)")
        if cfg.clip_length < self.frames:
            raise FdmError(f"--clip-length {cfg.clip_length} is shorter than the model's "
                           f"{self.frames} frames (max_frames)")

    @classmethod
    def model_config(cls, cfg, model_config: dict) -> dict:
        return model_config  # K is the model's max_frames; the clip length T is the loader's

    @classmethod
    def resolved_clip_length(cls, cfg, model_config: dict) -> int | None:
        return cfg.clip_length

    def clip_length(self) -> int:
        return self.cfg.clip_length

    def level_draw(self) -> str:
        return getattr(self.cfg, "noise_levels", None) or "per-clip"

    def make_batch(self, clips: torch.Tensor, rng: np.random.Generator) -> Batch:
        """clips [B, T, C, H, W] -> K slots per example: observed + latent frames, then padding
        taken from the next clip of the batch (the same clip when B = 1)."""
        B, T = clips.shape[:2]
        selections = [fdm_selection(T, self.frames, rng) for _ in range(B)]

        def padding_from(b: int, n: int):
            return (b + 1) % B, sorted(int(i) for i in rng.choice(T, size=n, replace=False))

        return selection_batch(clips, selections, self.frames, padding_from)


_PAPER = dict(lr=1e-4, optimizer="adamw", ema_decay=0.9999, diffusion_steps=1000, noise_schedule="linear",
              prediction="eps", save_every=5000, sample_every=50_000, sample_n_obs=36)

for _preset in (
    Preset("tiny", "fdm", "CPU-sized FDM: 32 px, 32 channels, K=10 of 40-frame clips",
           dict(clip_length=40, batch_size=2, lr=2e-4, warmup_steps=100, ema_decay=0.999, steps=5000,
                save_every=500, sample_every=1000, log_every=10, diffusion_steps=1000, sample_steps=10,
                sample_n_obs=4, sample_length=40)),
    # The shipped demo model (README "The demo model"): data from
    # `fdm data make bouncing-balls --num-videos 400 --num-test 40 --length 300 --size 32 --seed 0`.
    # v-prediction on a cosine schedule: measured better than eps/linear for few-step sampling (README).
    Preset("demo-balls", "fdm", "the demo model: the small (32-channel) FDM UNet on 32 px bouncing-balls, "
           "K=10 of 300-frame clips, v-prediction, cosine schedule; 9000 steps, the last 2690 annealing the "
           "lr to 0: about 2 h 15 min at the 0.9 s per step the run measured on 2 CPU cores",
           dict(dataset="bouncing-balls", clip_length=300, batch_size=4, lr=2e-4, warmup_steps=200,
                decay_steps=2690, ema_decay=0.999, steps=9000, save_every=500, keep_checkpoints=0, sample_every=2500,
                log_every=20, diffusion_steps=1000, noise_schedule="cosine", prediction="v", sample_steps=10,
                sample_n_obs=10, sample_length=60),
           model_preset="tiny"),
    Preset("fdm-carla", "fdm", "seed 003 README: --batch_size=2 --max_frames 20 --num_res_blocks=1, "
           "CARLA Town01 128 px, T=1000",
           dict(_PAPER, dataset="carla_no_traffic", clip_length=1000, batch_size=2, steps=550_000)),
    Preset("fdm-minerl", "fdm", "FDM paper: MineRL 64 px, T=500, K=20",
           dict(_PAPER, dataset="minerl", clip_length=500, batch_size=8, steps=550_000)),
    Preset("fdm-mazes", "fdm", "FDM paper: GQN mazes 64 px, T=300, K=20",
           dict(_PAPER, dataset="mazes_cwvae", clip_length=300, batch_size=8, steps=550_000)),
):
    register_preset(_preset)
