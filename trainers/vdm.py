"""VDM trainer (Ho et al. 2022; seeds 002/004): unconditional training of the factorised 3D UNet.

Every frame of a clip of consecutive frames is generated; nothing is observed. Conditional
sampling (video extension, `--n-obs` > 0, every scheme) goes through reconstruction guidance
(`fdm_engine.guidance.ReconstructionGuidance`, weight `--guidance-weight`), a wrapper under the
denoiser contract, so the executor runs it like any conditional model.
"""

from __future__ import annotations

from typing import ClassVar

from trainers.base import TRAINERS, Trainer
from trainers.presets import Preset, register_preset

TINY_TRAIN = dict(batch_size=2, lr=2e-4, warmup_steps=100, ema_decay=0.999, steps=5000, save_every=500,
                  sample_every=1000, log_every=10, sample_steps=10, sample_n_obs=4, sample_length=30)


@TRAINERS.register("vdm")
class VDMTrainer(Trainer):
    name = "vdm"
    # Seed 004's trainer: Adam at 2e-4 ("standard values", from the VDM paper), clipping at 1.0,
    # v-prediction on a cosine schedule.
    defaults: ClassVar[dict] = dict(lr=2e-4, optimizer="adam", grad_clip=1.0, prediction="v",
                                    noise_schedule="cosine", guidance_weight=2.0)
    options: ClassVar[tuple] = ("guidance_weight",)
    dataset_presets: ClassVar[dict] = {"moving-digits": "vdm-mmnist-32"}
    conditional = False

    def checkpoint_extra(self) -> dict:
        # Read by fdm_engine.guidance.for_checkpoint, so `fdm sample` and periodic sampling condition
        # the model the same way (guidance seeded with the sampling run's seed).
        return {"guidance": {"method": "reconstruction", "weight": self.cfg.guidance_weight}}


register_preset(Preset("tiny", "vdm", "CPU-sized VDM: 32 px, 32 channels, 10-frame clips", dict(TINY_TRAIN)))
register_preset(Preset(
    "vdm-mmnist-32", "vdm", "seed 004: Moving MNIST 32 px, 16 frames, 1 channel, 100k steps at batch 8",
    dict(dataset="moving-digits", batch_size=8, steps=100_000, save_every=10_000, sample_every=10_000,
         diffusion_steps=1000)))
