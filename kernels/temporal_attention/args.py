"""Argument checks shared by every temporal-attention implementation."""

from __future__ import annotations

import torch

from fdm_common.errors import FdmError


def check_attention_args(q, k, v, rel, mask) -> None:
    """q, k, v [B, S, n, F, D] alike; rel [B, n, F, F, D] or None; mask [B, F, F] bool or None."""
    if q.ndim != 5 or k.shape != q.shape or v.shape != q.shape:
        raise FdmError(
            f"temporal_attention: q, k, v must be [B, S, n, F, D] of one shape "
            f"(got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)})"
        )
    B, S, n, Fr, D = q.shape
    if rel is not None and tuple(rel.shape) != (B, n, Fr, Fr, D):
        raise FdmError(f"temporal_attention: rel must be [B, n, F, F, D] = {(B, n, Fr, Fr, D)} (got {tuple(rel.shape)})")
    if mask is not None and (tuple(mask.shape) != (B, Fr, Fr) or mask.dtype != torch.bool):
        raise FdmError(
            f"temporal_attention: mask must be bool [B, F, F] = {(B, Fr, Fr)} (got {mask.dtype} {tuple(mask.shape)})"
        )
