"""Memory a request would need, checked before it is allocated: one line with the estimate and
the limit, instead of an allocator traceback (or the machine swapping itself to a halt)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fdm_engine.errors import FdmError


def memory_limit() -> int:
    """Bytes this process may use: physical memory, or the cgroup's limit when lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limit = min(limit, int(text))
    except OSError:
        pass
    return limit


def check_disk(nbytes: float, folder, what: str) -> None:
    """FdmError when writing `nbytes` into `folder` (or its nearest existing parent) cannot fit."""
    where = Path(folder)
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if nbytes > free:
        raise FdmError(f"{what} needs about {human_bytes(nbytes)} of disk, more than the {human_bytes(free)} "
                       f"free in {where}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"  # unreachable; keeps the type checker content


def check_memory(nbytes: float, what: str, fix: str = "") -> None:
    """FdmError when `nbytes` (an estimate) exceeds the memory limit. `what` names the request,
    e.g. "--size 100000: a 4-frame video"; `fix` says what to change."""
    limit = memory_limit()
    if nbytes > limit:
        hint = f"; {fix}" if fix else ""
        size = "over 9.2 EB (its tensor sizes overflow 64 bits)" if nbytes == float("inf") else \
            f"about {human_bytes(nbytes)}"
        raise FdmError(f"{what} needs {size} of memory, more than the "
                       f"{human_bytes(limit)} this machine has{hint}")
