"""The denoiser contract's input check, shared by every model (docs/denoiser.md)."""

from __future__ import annotations

from fdm_engine.errors import FdmError


def check_contract_inputs(model, x, frame_indices, noise_levels, observed, valid) -> None:
    """FdmError unless the contract's inputs (docs/denoiser.md) have the shapes `model` expects."""
    who = type(model).__name__
    if x.dim() != 5:
        raise FdmError(f"{who} expects x of shape [B, F, C, H, W] (got {tuple(x.shape)})")
    B, Fr, C, H, W = x.shape
    want = (model.channels, model.image_size, model.image_size)
    if (C, H, W) != want:
        raise FdmError(f"{who} expects frames of shape {want} (got {(C, H, W)})")
    for name, t in (("frame_indices", frame_indices), ("noise_levels", noise_levels), ("observed", observed),
                    ("valid", valid)):
        if t is not None and tuple(t.shape) != (B, Fr):
            raise FdmError(f"{who} expects {name} of shape {(B, Fr)} (got {tuple(t.shape)})")
