"""fdm kernels: Triton ops with plain-PyTorch reference twins, and implementation dispatch.

Public API (see kernels/README.md for the math):

    diag_scan(a, x, reverse=False, impl=None)                    complex [B, D, L] -> h [B, D, L]
    temporal_attention(q, k, v, rel=None, mask=None, impl=None)  FDM attention, [B, S, n, F, D]
    s4d_conv / s4d_scan (kernels.s4d)                           the S4D convolution, two exact forms

The layers that own parameters (S4D, BiS4D, attention blocks) are model code: fdm_engine.models.

`impl` is "ref", "triton", "cpu" or None (triton on CUDA, cpu otherwise; env FDM_KERNELS=...
overrides the default). Importing this package never imports triton: the Triton implementations
load on first use.
"""

from kernels.diag_scan import diag_scan, diag_scan_cpu, diag_scan_ref
from kernels.dispatch import ENV_VAR, IMPLS, resolve_impl
from kernels.temporal_attention import temporal_attention, temporal_attention_cpu, temporal_attention_ref

__all__ = [
    "ENV_VAR",
    "IMPLS",
    "diag_scan",
    "diag_scan_cpu",
    "diag_scan_ref",
    "resolve_impl",
    "temporal_attention",
    "temporal_attention_cpu",
    "temporal_attention_ref",
]
