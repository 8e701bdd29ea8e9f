"""Denoiser models. Every model follows one contract (docs/denoiser.md):

    pred = model(x, frame_indices, noise_levels, observed, valid=None)
    x [B, F, C, H, W], frame_indices [B, F] int64, noise_levels [B, F] (timesteps; 0 on observed),
    observed [B, F] bool, valid [B, F] bool (False = padding slot) -> pred [B, F, C, H, W]

A model class has a frozen `Config` dataclass (fdm_engine.config.Config), is built as
`cls(config)`, keeps it as `self.config`, and exposes `image_size`, `channels` and `max_frames`
(None when any number of frames is accepted). Register it in MODELS so checkpoints can rebuild it.
"""

from __future__ import annotations

import sys
from typing import Any

from fdm_engine.errors import FdmError
from fdm_engine.limits import check_memory
from fdm_engine.registry import Registry

MODELS: Registry = Registry("model", group="fdm.models")


def build_model(name: str, config: dict[str, Any] | None = None, **overrides):
    """Build a registered model from a config dict (e.g. read from a checkpoint)."""
    cls = MODELS.get(name)
    cfg = cls.Config.from_dict({**(config or {}), **overrides})
    check_memory(weight_bytes(cls, cfg), f"model {name} ({_sizes(cfg)})", "check the model config")
    return cls(cfg)


def weight_bytes(cls, cfg) -> float:
    """Bytes of the model's weights, counted on the meta device (nothing allocated)."""
    import torch

    try:
        with torch.device("meta"):
            model = cls(cfg)
    except RuntimeError as e:  # a tensor shape whose size overflows int64
        if "overflow" in str(e):
            return float("inf")
        raise
    return float(sum(p.numel() * p.element_size() for p in model.parameters()))


def _sizes(cfg) -> str:
    fields = cfg.to_dict()
    named = [f"{k}={fields[k]}" for k in ("base_channels", "image_size", "channels", "max_frames") if k in fields]
    return ", ".join(named) or type(cfg).__name__


def model_name(model) -> str:
    """The registry name of a model instance."""
    for name in MODELS.names():
        if type(model) is MODELS.get(name):
            return name
    raise KeyError(f"{type(model).__name__} is not registered in MODELS")


def model_preset(model: str, preset: str):
    """The Config of preset `preset` of registered model `model` (e.g. "vdm", "vdm-mmnist-32").

    Presets live in a `PRESETS` dict (name -> Config) on the model class, or in its module.
    """
    cls = MODELS.get(model)
    presets = getattr(cls, "PRESETS", None)
    if presets is None:
        presets = getattr(sys.modules[cls.__module__], "PRESETS", {})
    if preset not in presets:
        raise FdmError(f"unknown {model} preset {preset!r} (known: {', '.join(sorted(presets)) or 'none'})")
    return presets[preset]


# Imported last so `import fdm_engine.models` registers the built-in models (they need MODELS).
from fdm_engine.models import fdm_unet, ramvid_unet, unet3d, vd_unet, vdm_unet  # noqa: F401
