"""fdm kernels: Triton ops with plain-PyTorch reference twins, and implementation dispatch.

`impl` is "ref", "triton", "cpu" or None (triton on CUDA, cpu otherwise; env FDM_KERNELS=...
overrides the default). Importing this package never imports triton.
"""

from kernels.diag_scan import diag_scan, diag_scan_cpu, diag_scan_ref
from kernels.dispatch import ENV_VAR, IMPLS, resolve_impl

__all__ = ["ENV_VAR", "IMPLS", "diag_scan", "diag_scan_cpu", "diag_scan_ref", "resolve_impl"]
