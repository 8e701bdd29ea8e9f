"""fdm kernels: Triton ops with plain-PyTorch reference twins, and implementation dispatch.

Public API (see kernels/README.md for the math):

    diag_scan(a, x, reverse=False, impl=None)                    complex [B, D, L] -> h [B, D, L]
    temporal_attention(q, k, v, rel=None, mask=None, impl=None)  FDM attention, [B, S, n, F, D]
    S4D(S4DConfig(...)), BiS4D(BiS4DConfig(...))                  SSM layers built on diag_scan

`impl` is "ref", "triton", "cpu" or None (triton on CUDA, cpu otherwise; env FDM_KERNELS=...
overrides the default). Importing this package never imports triton: the Triton implementations
load on first use.
"""

from kernels.bi_ssm import BiS4D, BiS4DConfig
from kernels.diag_scan import diag_scan, diag_scan_cpu, diag_scan_ref
from kernels.dispatch import ENV_VAR, IMPLS, resolve_impl
from kernels.s4d import S4D, S4DConfig
from kernels.temporal_attention import temporal_attention, temporal_attention_cpu, temporal_attention_ref

__all__ = [
    "BiS4D",
    "BiS4DConfig",
    "ENV_VAR",
    "IMPLS",
    "S4D",
    "S4DConfig",
    "diag_scan",
    "diag_scan_cpu",
    "diag_scan_ref",
    "resolve_impl",
    "temporal_attention",
    "temporal_attention_cpu",
    "temporal_attention_ref",
]
