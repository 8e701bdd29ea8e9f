"""RaMViD trainer (Höppe et al. 2022, seed 001): random conditioning frames inside each clip.

With probability `--uncondition-rate` a clip is generated whole; otherwise r ~ U{1..
`--max-num-mask-frames`} random positions are conditioning frames, given clean (level 0), and the
loss covers only the generated frames. One timestep per clip. Frames are consecutive; the model
refuses jobs with gaps, so it samples with contiguous (autoregressive) schemes.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from trainers.base import TRAINERS, Batch, Trainer, selection_batch
from trainers.masks import ramvid_selection
from trainers.presets import Preset, register_preset
from trainers.vdm import TINY_TRAIN


@TRAINERS.register("ramvid")
class RaMViDTrainer(Trainer):
    name = "ramvid"
    # Seed 001: improved-diffusion's AdamW, lr 2e-5, 1000 linear steps, EMA 0.9999.
    defaults: ClassVar[dict] = dict(lr=2e-5, optimizer="adamw", ema_decay=0.9999, uncondition_rate=0.25,
                                    max_num_mask_frames=4, sample_scheme="autoreg")
    options: ClassVar[tuple] = ("uncondition_rate", "max_num_mask_frames")
    conditional = True

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        ramvid_selection(self.frames, cfg.max_num_mask_frames, cfg.uncondition_rate, np.random.default_rng(0))

    def make_batch(self, clips: torch.Tensor, rng: np.random.Generator) -> Batch:
        """clips [B, F, C, H, W] -> all F frames, a random few observed (RaMViD's masks)."""
        selections = [ramvid_selection(clips.shape[1], self.cfg.max_num_mask_frames, self.cfg.uncondition_rate, rng)
                      for _ in range(len(clips))]
        return selection_batch(clips, selections, self.frames)


def _paper(batch_size: int, microbatch: int, uncondition_rate: float) -> dict:
    # RaMViD's --batch_size is per optimiser step and --microbatch the chunk size: accumulation.
    return dict(dataset="folder", lr=2e-5, batch_size=batch_size, grad_accum=batch_size // microbatch,
                max_num_mask_frames=4, uncondition_rate=uncondition_rate, diffusion_steps=1000,
                noise_schedule="linear")


for _preset in (
    Preset("tiny", "ramvid", "CPU-sized RaMViD: 32 px, 32 channels, 10-frame clips",
           dict(TINY_TRAIN, lr=2e-4, max_num_mask_frames=4, sample_n_obs=4)),
    Preset("ramvid-kinetics600-64", "ramvid", "seed 001: Kinetics-600 64 px, seq_len 16, 3 res blocks, "
           "batch 8 (microbatch 2), K=4, p=0.25", _paper(8, 2, 0.25)),
    Preset("ramvid-bair-64", "ramvid", "seed 001: BAIR 64 px, seq_len 20, 2 res blocks, batch 4 (microbatch 2), "
           "K=4, p=0.25", _paper(4, 2, 0.25)),
    Preset("ramvid-ucf101-64", "ramvid", "seed 001: UCF-101 64 px, seq_len 16, 3 res blocks, batch 8 "
           "(microbatch 2), K=4, p=0.75", _paper(8, 2, 0.75)),
):
    register_preset(_preset)
