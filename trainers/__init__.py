"""Trainers: one training loop (trainers.loop) and one trainer per documented model.

    from trainers import TrainConfig, train
    result = train(TrainConfig(dataset="bouncing-balls", data_dir="data/balls", model="fdm",
                               preset="tiny", steps=2000, run_dir="runs/balls"))
    result.checkpoint        # RUN_DIR/checkpoints/step_0002000.safetensors (`fdm sample` takes it)

Trainers by model name (TRAINERS; plug-ins: entry-point group `fdm.trainers`):

    fdm     FDM masks (docs/training.md): random observed/latent subsets of long clips, padding from another
            clip, loss over latent frames only
    vdm     unconditional factorised 3D UNet; conditional sampling by reconstruction guidance
    ramvid  random conditioning frames (uncondition_rate, max_num_mask_frames), loss on generated
    ssm     the VDM UNet with bi-S4D temporal layers (temporal_layer attn | bi-s4d)

Presets (trainers.presets.PRESETS): "tiny" for every model, plus the seeds' documented settings
(fdm-carla, fdm-minerl, fdm-mazes, vdm-mmnist-32, ramvid-{kinetics600,bair,ucf101}-64,
ssm-ucf101-{32,64}, ssm-minerl-32-{64f,150f}).

A run folder holds config.json, metrics.jsonl, loss.png, checkpoints/step_{N:07d}.safetensors
(+ .state.pt) and samples/step_{N:07d}/; training the same folder again resumes it.
"""

from trainers import fdm, ramvid, ssm, vdm  # noqa: F401  (register the trainers and presets)
from trainers.base import TRAINERS, Batch, Trainer
from trainers.config import TrainConfig
from trainers.loop import TrainingDiverged, TrainResult, train
from trainers.masks import FrameSelection, fdm_selection, ramvid_selection, sample_group
from trainers.presets import PRESETS, Preset, get_preset
from trainers.resolve import resolve

__all__ = [
    "PRESETS",
    "TRAINERS",
    "Batch",
    "FrameSelection",
    "Preset",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "fdm_selection",
    "get_preset",
    "ramvid_selection",
    "resolve",
    "sample_group",
    "train",
]
