"""The denoiser contract's input check, shared by every model (docs/denoiser.md), and the
frame-order and padding plumbing of the clip-at-once models (RaMViD, UNet3D)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from fdm_engine.errors import FdmError
from fdm_engine.models.temporal_layers import frame_order


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


def on_real_frames(clip_forward: Callable, x, frame_indices, noise_levels, observed, valid) -> torch.Tensor:
    """Run `clip_forward(x, frame_indices, noise_levels, observed)` on each clip's real frames, in
    ascending frame-index order, and put the outputs back in the caller's slot order.

    For networks whose convs and norms mix all frames of a clip: masking would not isolate padding,
    so each clip runs on its real frames only (clips grouped by real-frame count); padding slots
    get zeros and cannot influence real frames. x [B, F, ...]; the rest [B, F]; valid may be None.
    """
    B, Fr = x.shape[:2]
    if valid is not None and bool(valid.all()):
        valid = None
    perm = frame_order(frame_indices.long(), valid)  # [B, F] real frames by index, padding last

    def slots(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        return torch.take_along_dim(t, order.view(B, Fr, *(1,) * (t.dim() - 2)), dim=1)

    xs, idx, levels, obs = (slots(t, perm) for t in (x, frame_indices.long(), noise_levels, observed))
    if valid is None:
        out = clip_forward(xs, idx, levels, obs)
    else:
        n_real = valid.sum(dim=1)  # [B]
        out = torch.zeros_like(x)
        for n in sorted(set(n_real.tolist()) - {0}):
            rows = (n_real == n).nonzero().squeeze(1)
            piece = clip_forward(xs[rows, :n], idx[rows, :n], levels[rows, :n], obs[rows, :n])
            out = out.index_copy(0, rows, F.pad(piece, (0, 0) * (x.dim() - 2) + (0, Fr - n)))
    return slots(out, torch.argsort(perm, dim=1))  # back to the caller's slot order
