"""FDM checkpoints written by the published trainer (`model{step:06d}.pt`, `ema_{rate}_{step:06d}.pt`).

Each file is a pickle of {"state_dict": the UNetVideoModel's weights, "config": the training
script's arguments as a dict, "step": int}. The network is our FDMUNet with the published
attention (models/attention_published.py) and the published time convention: every frame of a
job, observed ones included, gets the job's timestep (`observed_timestep="job"`), scaled by
1000 / diffusion_steps when `rescale_timesteps` (as improved DDPM's respacing wrapper does).
The model settings, dataset and max_frames all come from "config"; `--flags` may override them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models.fdm_unet import DEFAULT_CHANNEL_MULT, FDMUNet, FDMUNetConfig
from fdm_engine.published import PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, fit_state_dict, load_pickle
from fdm_engine.published.keymap import flags_like, parse_flags, refuse_unsupported_unet_flags

# The published training script's model and diffusion defaults (used where "config" lacks a key).
DEFAULTS: dict[str, Any] = {
    "dataset": "", "T": -1, "max_frames": 20, "image_size": 64, "num_channels": 128, "num_res_blocks": 2,
    "num_heads": 4, "num_heads_upsample": -1, "attention_resolutions": "16,8", "dropout": 0.0,
    "learn_sigma": False, "sigma_small": False, "diffusion_steps": 1000, "noise_schedule": "linear",
    "predict_xstart": False, "rescale_timesteps": True, "use_scale_shift_norm": True, "use_rpe_net": True,
}
CHANNELS = 3  # the published model is built for RGB

# Our key -> the published key: top-level modules first, then names inside blocks.
_TOP = [
    (r"^time_embed\.mlp\.", "time_embed."),
    (r"^in_conv\.", "input_blocks.0.0."),
    (r"^down\.(\d+)\.", lambda m: f"input_blocks.{int(m[1]) + 1}."),  # input_blocks[0] is the in conv
    (r"^middle\.", "middle_block."),
    (r"^up\.", "output_blocks."),
    (r"^out_norm\.", "out.0."),
    (r"^out_conv\.", "out.2."),
]
_INNER = [
    (r"\.in_norm\.", ".in_layers.0."), (r"\.in_conv\.", ".in_layers.2."), (r"\.emb\.", ".emb_layers.1."),
    (r"\.out_norm\.", ".out_layers.0."), (r"\.out_conv\.", ".out_layers.3."), (r"\.skip\.", ".skip_connection."),
    (r"^(input_blocks\.\d+\.0)\.conv\.", r"\1.op."),  # a Downsample stage's conv
    (r"\.temporal\.", ".temporal_attention."), (r"\.spatial\.", ".spatial_attention."), (r"\.proj\.", ".proj_out."),
    (r"\.rel_([qkv])\.dist\.", r".rpe_\1.rpe_net.embed_distances."),
    (r"\.rel_([qkv])\.time\.", r".rpe_\1.rpe_net.embed_diffusion_time."),
    (r"\.rel_([qkv])\.out\.", r".rpe_\1.rpe_net.out."),
]


def published_key(key: str) -> str:
    """The published UNetVideoModel's name for our FDMUNet (attention="published") key."""
    for pattern, repl in _TOP + _INNER:
        key = re.sub(pattern, repl, key)
    return key


class FdmFormat(PublishedFormat):
    description = "published FDM TrainLoop.save files (model*.pt, ema_*.pt): settings from the file"
    needs_hint = '--flags "--image_size 128 --num_res_blocks 1" (overrides the file\'s config)'

    def detect(self, obj: Any) -> bool:
        sd = obj.get("state_dict") if isinstance(obj, dict) else None
        return (isinstance(sd, dict) and isinstance(obj.get("config"), dict)
                and any(isinstance(k, str) and ".temporal_attention." in k for k in sd))

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        if config_file is not None:
            raise FdmError(f"{path}: --from fdm takes its settings from the file (and --flags), not --config")
        obj = load_pickle(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
            raise FdmError(f"{path}: not a published FDM checkpoint (expected a dict with 'state_dict', "
                           f"'config' and 'step')")
        saved = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        cfg = {**DEFAULTS, **{k: v for k, v in saved.items() if k in DEFAULTS}}
        if flags:
            cfg = parse_flags(flags, flags_like(cfg), f"{path}: --flags")
        model_config, notes = _model_config(path, cfg)
        state = dict(obj["state_dict"])
        if cfg["learn_sigma"]:
            notes.append("learn_sigma: the network also predicts variances; fdm keeps its mean channels "
                         "(the first 3 of 6) and samples with a fixed variance")
            for k in ("out.2.weight", "out.2.bias"):
                if k in state and state[k].shape[0] == 2 * CHANNELS:
                    state[k] = state[k][:CHANNELS]
        described = f"a published FDM net built from its config (image_size {cfg['image_size']}, " \
                    f"num_channels {cfg['num_channels']}, num_res_blocks {cfg['num_res_blocks']})"
        with torch.device("meta"):  # shapes only: no memory, no init
            net = FDMUNet(model_config)
        weights = fit_state_dict(path, net, state, published_key, described)
        return LoadedPublished(
            model_name="fdm",
            model_config=model_config.to_dict(),
            state_dict=weights,
            diffusion=_diffusion(path, cfg),
            conventions={
                "observed_timestep": "job", "timestep_scale": model_config.timestep_scale,
                "attention": "published", "observed_input": "clean", "data_range": [-1, 1],
                "clip_denoised": True, "variance": "fixed_small" if cfg["sigma_small"] else "fixed_large",
            },
            extra={"dataset": cfg["dataset"] or None, "T": cfg["T"], "step": obj.get("step"),
                   "max_latent_frames": cfg["max_frames"] // 2},
            notes=notes,
            used_ema=Path(path).name.startswith("ema_"),
        )


def _model_config(path: Path, cfg: dict[str, Any]) -> tuple[FDMUNetConfig, list[str]]:
    size = cfg["image_size"]
    if size not in DEFAULT_CHANNEL_MULT:
        raise FdmError(f"{path}: image_size {size} (the published FDM model supports "
                       f"{', '.join(map(str, sorted(DEFAULT_CHANNEL_MULT)))})")
    if not cfg["use_rpe_net"]:
        raise FdmError(f"{path}: use_rpe_net False: the published code cannot build that model either")
    refuse_unsupported_unet_flags(str(path), cfg)
    try:
        factors = [size // int(r) for r in str(cfg["attention_resolutions"]).split(",")]
    except (ValueError, ZeroDivisionError):
        raise FdmError(f"{path}: attention_resolutions {cfg['attention_resolutions']!r} is not a "
                       f"comma-separated list of resolutions") from None
    scale = 1000.0 / cfg["diffusion_steps"] if cfg["rescale_timesteps"] else 1.0
    config = FDMUNetConfig(
        image_size=size, channels=CHANNELS, base_channels=cfg["num_channels"],
        channel_mult=DEFAULT_CHANNEL_MULT[size], num_res_blocks=cfg["num_res_blocks"],
        attention_resolutions=tuple(size // f for f in factors if f > 0), num_heads=cfg["num_heads"],
        max_frames=cfg["max_frames"], dropout=float(cfg["dropout"]), attention="published",
        observed_timestep="job", timestep_scale=scale,
    )
    return config, []


def _diffusion(path: Path, cfg: dict[str, Any]) -> DiffusionConfig:
    if cfg["noise_schedule"] not in ("linear", "cosine"):
        raise FdmError(f"{path}: noise_schedule {cfg['noise_schedule']!r} (fdm knows linear, cosine)")
    return DiffusionConfig(schedule=cfg["noise_schedule"], num_steps=int(cfg["diffusion_steps"]),
                           prediction="x0" if cfg["predict_xstart"] else "eps")


PUBLISHED_FORMATS.register("fdm", FdmFormat())
