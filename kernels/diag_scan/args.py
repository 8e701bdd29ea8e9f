"""Argument checks shared by every diag_scan implementation (one helper, not one copy per backend)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fdm_common.errors import FdmError
from kernels.tensors import resolved

COMPLEX = (torch.complex32, torch.complex64, torch.complex128)


@dataclass(frozen=True)
class ScanArgs:
    a: torch.Tensor  # [B, D, L] complex, expanded to x's shape (possibly stride-0 views)
    x: torch.Tensor  # [B, D, L] complex
    out_dtype: torch.dtype  # dtype of h: the promoted input dtype
    compute_dtype: torch.dtype  # complex64 for complex32 inputs (half-precision complex math is not supported)


def check_scan_args(a: torch.Tensor, x: torch.Tensor) -> ScanArgs:
    """Validate a [B, D, L] (or anything broadcastable to x) and x [B, D, L], both complex."""
    if not isinstance(a, torch.Tensor) or not isinstance(x, torch.Tensor):
        raise FdmError(f"diag_scan: a and x must be tensors (got {type(a).__name__}, {type(x).__name__})")
    if x.dtype not in COMPLEX or a.dtype not in COMPLEX:
        raise FdmError(f"diag_scan: a and x must be complex tensors (got {a.dtype} and {x.dtype})")
    if x.ndim != 3:
        raise FdmError(f"diag_scan: x must be [B, D, L] (got shape {tuple(x.shape)})")
    if a.device != x.device:
        raise FdmError(f"diag_scan: a and x are on different devices ({a.device} and {x.device})")
    a, x = resolved(a), resolved(x)  # before the expand: a broadcast `a` stays a small copy
    try:
        a = a.expand(x.shape)
    except RuntimeError:
        raise FdmError(f"diag_scan: a of shape {tuple(a.shape)} does not broadcast to x's {tuple(x.shape)}") from None
    out_dtype = torch.promote_types(a.dtype, x.dtype)
    compute_dtype = torch.complex64 if out_dtype == torch.complex32 else out_dtype
    return ScanArgs(a, x, out_dtype, compute_dtype)
