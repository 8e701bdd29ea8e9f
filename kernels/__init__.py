"""fdm kernels: Triton ops with plain-PyTorch reference twins, and implementation dispatch.

`impl` is "ref", "triton", "cpu" or None (triton on CUDA, cpu otherwise; env FDM_KERNELS=...
overrides the default). Importing this package never imports triton.
"""

from kernels.bi_ssm import BiS4D, BiS4DConfig
from kernels.diag_scan import diag_scan, diag_scan_cpu, diag_scan_ref
from kernels.dispatch import ENV_VAR, IMPLS, resolve_impl
from kernels.s4d import S4D, S4DConfig

__all__ = [
    "BiS4D", "BiS4DConfig", "ENV_VAR", "IMPLS", "S4D", "S4DConfig",
    "diag_scan", "diag_scan_cpu", "diag_scan_ref", "resolve_impl",
]
