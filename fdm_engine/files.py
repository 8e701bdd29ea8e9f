"""Atomic file writes: a reader (or a killed process) never sees half a file."""

from __future__ import annotations

import errno
import os
import resource
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fdm_engine.errors import FdmError


# No space, over `ulimit -f` (Python ignores SIGXFSZ, so the write fails with EFBIG), over quota.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _disk_full(e: Exception, tmp: Path) -> bool:
    """Whether `e`, raised while writing `tmp`, means the disk (or `ulimit -f`) is full. OSError
    says so by errno; torch.save and numpy report a short write without one, and safetensors in
    its message, so the file itself is looked at: stopped at the size limit, or no space left."""
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return True
    if any(s in str(e) for s in ("No space left", "File too large", "Disk quota")):
        return True
    try:
        size = tmp.stat().st_size
        st = os.statvfs(tmp.parent)
    except OSError:
        return False
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    at_limit = soft != resource.RLIM_INFINITY and size >= soft - 65536
    return at_limit or st.f_bfree * st.f_frsize < 1 << 20


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
        tmp = None  # moved: nothing to clean up
    except Exception as e:  # writers report a full disk in their own ways (torch, safetensors, numpy)
        if not _disk_full(e, tmp):
            raise
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise FdmError(f"{path}: could not write it (the disk is full or the file size limit, ulimit -f, "
                       f"is reached); {kept}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def check_output_path(path, flag: str, folder: bool = False) -> Path:
    """FdmError naming `flag` unless `path` can be written: an output file (folder=False) or a
    folder to write into (folder=True), both created with their missing parents.

    Refused: a path below an existing file, an existing path of the wrong kind (a folder for a
    file, a device such as /dev/full, a file for a folder), and a place where no file can be
    created (/proc, a read-only mount, no permission) -- tried by creating and removing a
    temporary file in the nearest existing folder, since permission bits do not say that
    for root or for pseudo file systems. Nothing is left behind.
    """
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise FdmError(f"{flag} {path}: is a file, not a folder")
        if not folder and path.is_dir():
            raise FdmError(f"{flag} {path}: is a folder; give a file name")
        if not folder and not path.is_file():
            raise FdmError(f"{flag} {path}: not a regular file (a device or pipe); give a file name")
    where = path if folder and path.is_dir() else path.parent
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        raise FdmError(f"{flag} {path}: {where} is a file, so nothing can be created below it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fdm-probe.", dir=where)
    except OSError as e:
        raise FdmError(f"{flag} {path}: cannot create files in {where} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path
