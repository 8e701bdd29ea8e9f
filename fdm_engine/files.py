"""Atomic file writes: a reader (or a killed process) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the format); move it
    into place only if the body succeeds, else remove it.

    os.replace is atomic within one file system, so `path` holds the old file or the new one. With
    fsync the data reaches the disk before the rename (checkpoints: survive a power cut too). A
    hard kill can leave a hidden `.<stem>.*<suffix>` beside `path`, never a broken `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


@contextmanager
def exclusive_lock(folder, name: str, what: str) -> Iterator[None]:
    """Hold OUT/.<name>.lock for the body; a second holder gets one FdmError line.

    The lock (flock) goes with the process, so a killed run never leaves the folder locked. The
    file stays: removing it would let a waiting process lock a file nobody else sees.
    """
    import fcntl

    from fdm_engine.errors import FdmError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise FdmError(f"{folder} is in use by another {what} (pid {holder}): wait for it to end, "
                       f"or choose another --out") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()
