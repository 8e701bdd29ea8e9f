"""Implementation choice for every op in `kernels`: one rule, applied in one place.

Each op has up to three implementations with the same signature:

- ``ref``    plain PyTorch, written for clarity; the twin every other implementation is tested against.
- ``triton`` the Triton kernel (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``).
- ``cpu``    the fastest pure-PyTorch path (it also runs on CUDA tensors; "cpu" names its purpose).

``impl=None`` picks ``triton`` for CUDA tensors of a dtype the kernel handles (when triton imports)
and ``cpu`` otherwise. The environment variable ``FDM_KERNELS=ref|triton|cpu`` replaces that default
for every call that does not name an implementation; an explicit ``impl=`` argument always wins.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import torch

from fdm_common.errors import FdmError

IMPLS = ("ref", "triton", "cpu")
ENV_VAR = "FDM_KERNELS"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """Whether `import triton` can work; checked without importing it (no side effects)."""
    return importlib.util.find_spec("triton") is not None


def triton_runs_on(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors of `device` in this process."""
    if not triton_installed():
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def resolve_impl(
    op: str, impl: str | None, device: torch.device, triton_dtype_ok: bool = True, choices: tuple[str, ...] = IMPLS
) -> str:
    """The implementation name to run `op` with (see module doc for the rule).

    `triton_dtype_ok` says whether the Triton kernel supports the inputs' dtype; the default choice
    falls back to ``cpu`` when it does not, a forced ``triton`` raises.
    """
    source = "impl argument"
    if impl is None:
        impl = os.environ.get(ENV_VAR) or None
        source = f"{ENV_VAR} environment variable"
    if impl is None:
        if device.type == "cuda" and triton_dtype_ok and triton_runs_on(device) and "triton" in choices:
            return "triton"
        return "cpu" if "cpu" in choices else "ref"
    if impl not in choices:
        raise FdmError(f"{op}: unknown kernel implementation {impl!r} from the {source} (choose from {', '.join(choices)})")
    if impl == "triton":
        if not triton_installed():
            raise FdmError(f"{op}: implementation 'triton' needs the triton package (pip install triton)")
        if not triton_runs_on(device):
            raise FdmError(
                f"{op}: implementation 'triton' needs CUDA tensors (got {device.type}); "
                "set TRITON_INTERPRET=1 before importing triton to run it on the CPU"
            )
        if not triton_dtype_ok:
            raise FdmError(f"{op}: implementation 'triton' does not support these dtypes; use impl='cpu' or 'ref'")
    return impl


def pick(op: str, table: dict[str, Callable], impl: str | None, device: torch.device, triton_dtype_ok: bool = True):
    """The function from `table` (impl name -> function) that `resolve_impl` selects."""
    return table[resolve_impl(op, impl, device, triton_dtype_ok, tuple(table))]
