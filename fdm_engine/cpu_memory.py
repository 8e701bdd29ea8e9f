"""Keep freed tensor memory inside the process (glibc Linux), so activations are not page-faulted in anew.

PyTorch's CPU allocator is plain malloc. glibc serves every block over 128 KiB with a fresh mmap and
unmaps it on free, so each forward pass of a denoiser touches its activations as new pages: about
10k page faults (17 ms of system time) per 32 px / 64 channel / K=20 FDM forward here, 110k (0.2 s)
at 64 px. Serving large blocks from the heap and never trimming it removes them: memory freed by
one forward is reused by the next, the way the CUDA caching allocator keeps its blocks. The cost is
that the process keeps its peak heap size until it exits, which suits one sampling or training run.

Called by the `fdm` console entry point and the benchmarks; a library user may call it once.
Set FDM_RETAIN_FREED_MEMORY=0 to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied = False


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no mmap per large block, no heap trimming).

    Returns True when the setting is in force (now or from an earlier call); False on non-glibc
    platforms or when FDM_RETAIN_FREED_MEMORY=0. Idempotent; safe to call at any time.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("FDM_RETAIN_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1  # large blocks come from the heap, which can be reused
    ok = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1 and ok  # and it is never shrunk
    _applied = ok
    return ok
