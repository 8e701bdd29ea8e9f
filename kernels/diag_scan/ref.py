"""Reference twin of diag_scan: the recurrence written out step by step in plain PyTorch."""

from __future__ import annotations

import torch

from kernels.diag_scan.args import check_scan_args


def diag_scan_ref(a: torch.Tensor, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = 0 (from the end when `reverse`), one step at a time.

    a, x: complex [B, D, L] (a may be anything broadcastable to x). Returns h [B, D, L] in the
    promoted dtype. Differentiable through ordinary autograd; O(L) Python steps, so slow but obvious.
    """
    args = check_scan_args(a, x)
    a, x = args.a.to(args.compute_dtype), args.x.to(args.compute_dtype)
    L = x.shape[-1]
    h = torch.zeros_like(x[..., 0])  # [B, D]
    steps = [None] * L
    for t in reversed(range(L)) if reverse else range(L):
        h = a[..., t] * h + x[..., t]
        steps[t] = h
    if L == 0:
        return x.to(args.out_dtype).clone()
    return torch.stack(steps, dim=-1).to(args.out_dtype)  # [B, D, L]
