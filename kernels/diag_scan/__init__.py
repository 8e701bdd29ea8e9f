"""diag_scan: h_t = a_t * h_{t-1} + x_t over the last axis of complex [B, D, L] tensors.

The diagonal linear recurrence behind S4D (and any diagonal SSM): each of the B*D channels is an
independent first-order complex recurrence. Three implementations with one signature
(`kernels.dispatch` picks one):

- `ref.py`    `diag_scan_ref`: the recurrence one step at a time (autograd through the loop).
- `cpu.py`    `diag_scan_cpu`: blocked sequential scan in PyTorch ops, adjoint-scan backward.
- `triton.py` `diag_scan_triton`: chunked Triton scan, forward and backward kernels.
"""

from __future__ import annotations

import torch

from kernels.diag_scan.args import check_scan_args
from kernels.diag_scan.cpu import diag_scan_cpu
from kernels.diag_scan.ref import diag_scan_ref
from kernels.dispatch import pick


def _diag_scan_triton(a, x, reverse=False):
    from kernels.diag_scan.triton import diag_scan_triton  # lazy: imports triton

    return diag_scan_triton(a, x, reverse)


IMPLEMENTATIONS = {"ref": diag_scan_ref, "triton": _diag_scan_triton, "cpu": diag_scan_cpu}


def diag_scan(a: torch.Tensor, x: torch.Tensor, reverse: bool = False, impl: str | None = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + x_t with h_{-1} = 0; with `reverse`, h_t = a_t * h_{t+1} + x_t, h_L = 0.

    a, x: complex [B, D, L] (a may be anything broadcastable to x, e.g. [1, D, 1] for a
    time-invariant system). Returns h [B, D, L] in the promoted dtype; differentiable in a and x.
    `impl`: "ref" | "triton" | "cpu" | None (triton for CUDA tensors, else cpu; env FDM_KERNELS).
    """
    args = check_scan_args(a, x)
    fn = pick("diag_scan", IMPLEMENTATIONS, impl, args.x.device)
    return fn(args.a, args.x, reverse)


__all__ = ["diag_scan", "diag_scan_ref", "diag_scan_cpu", "IMPLEMENTATIONS"]
