"""SSM trainer (seed 000, "SSM meets video diffusion"): the VDM UNet with bidirectional S4D
temporal layers (`--temporal-layer bi-s4d`, from kernels/), trained unconditionally like VDM.

`--temporal-layer attn` trains the same UNet with temporal attention instead (the paper's
baseline). Sampling with `--n-obs` > 0 uses reconstruction guidance, as for VDM. The S4D layers
scan frames in index order, so contiguous (autoregressive) schemes match training best.
"""

from __future__ import annotations

from typing import ClassVar

from fdm_engine.errors import FdmError
from trainers.base import TRAINERS
from trainers.presets import Preset, register_preset
from trainers.vdm import TINY_TRAIN, VDMTrainer

TEMPORAL_LAYERS = ("attn", "bi-s4d")


@TRAINERS.register("ssm")
class SSMTrainer(VDMTrainer):
    name = "ssm"
    # Seed 000's table: Adam, EMA 0.995, L2 on eps.
    defaults: ClassVar[dict] = dict(lr=3e-4, optimizer="adam", ema_decay=0.995, prediction="eps",
                                    noise_schedule="linear", guidance_weight=2.0, sample_scheme="autoreg")
    options: ClassVar[tuple] = ("temporal_layer", "guidance_weight")
    dataset_presets: ClassVar[dict] = {"minerl": "ssm-minerl-32-64f"}

    @classmethod
    def model_config(cls, cfg, model_config: dict) -> dict:
        model_config = super().model_config(cfg, model_config)
        if cfg.temporal_layer is not None:
            if cfg.temporal_layer not in TEMPORAL_LAYERS:
                raise FdmError(f"--temporal-layer must be one of {', '.join(TEMPORAL_LAYERS)} "
                               f"(got {cfg.temporal_layer!r})")
            model_config = {**model_config, "temporal_layer": cfg.temporal_layer}
        return model_config


def _paper(dataset: str, diffusion_steps: int, lr: float, batch_size: int, grad_accum: int, steps: int) -> dict:
    return dict(dataset=dataset, diffusion_steps=diffusion_steps, lr=lr, batch_size=batch_size,
                grad_accum=grad_accum, steps=steps, optimizer="adam", ema_decay=0.995, prediction="eps",
                save_every=5000, sample_every=10_000)


for _preset in (
    Preset("tiny", "ssm", "CPU-sized SSM: 32 px, 32 channels, 10-frame clips, S4D state 64",
           dict(TINY_TRAIN, ema_decay=0.995)),
    # Seed 000's training table (UCF101 is a video folder: --data-dir with the UCF split lists).
    # Its command line trains batch 16 x 2 accumulation = 32.
    Preset("ssm-ucf101-32", "ssm", "seed 000: UCF101 32 px, 16 frames, T=256, lr 3e-4, batch 32, 92k steps",
           _paper("folder", 256, 3e-4, 32, 2, 92_000)),
    Preset("ssm-ucf101-64", "ssm", "seed 000: UCF101 64 px, 16 frames, T=1000, lr 1e-4, batch 32, 106k steps",
           _paper("folder", 1000, 1e-4, 32, 2, 106_000)),
    Preset("ssm-minerl-32-64f", "ssm", "seed 000: MineRL 32 px, 64 frames, T=256, lr 3e-4, batch 8, 174k steps",
           _paper("minerl", 256, 3e-4, 8, 1, 174_000)),
    Preset("ssm-minerl-32-150f", "ssm", "seed 000: MineRL 32 px, 150 frames, T=256, lr 3e-4, batch 8, 129k steps",
           _paper("minerl", 256, 3e-4, 8, 1, 129_000)),
):
    register_preset(_preset)
