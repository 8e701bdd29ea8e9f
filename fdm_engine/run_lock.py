"""One process per run folder: an exclusive, non-blocking lock on RUN_DIR/.fdm-lock.

    with run_folder_lock(run_dir, flag="--run-dir"):
        ...  # write checkpoints, metrics, videos

A second `fdm train` (or `fdm sample`) on the same folder gets one FdmError line instead of
interleaving its records or overwriting the first one's files. The lock is flock(2): the kernel
drops it when the holder exits, however it exits, so a killed run never leaves a stale lock (only
the tiny file, which the next run takes over). The file holds the holder's pid for the message.

A run that ends removes the file while it still holds the lock. That is safe because a lock
counts only when it is on the file the name points to: a process that opened the old file just
before it was removed gets its lock on a file nobody else can open, sees that the name now points
elsewhere (or nowhere), and tries again on the name.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fdm_engine.errors import FdmError

LOCK_NAME = ".fdm-lock"


@contextmanager
def run_folder_lock(folder, flag: str = "--out", name: str = LOCK_NAME, what: str = "fdm process") -> Iterator[Path]:
    """Hold the folder's lock FOLDER/`name` for the body (creating the folder). FdmError if another
    process holds it; `what` names the holder in that message (e.g. "`fdm sample`").

    The lock file is removed when the body ends, and so is a folder this call created that is
    empty again (a run that failed before writing anything), so a failed start leaves nothing behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    path = folder / name
    fd = _lock(folder, path, flag, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            # removed while still locked: whoever has it open finds the name gone (_lock)
            if _names(path, fd):  # (not if someone replaced it by hand meanwhile)
                path.unlink()
            if created and not any(folder.iterdir()):
                try:
                    folder.rmdir()
                except OSError:  # another process has just put its lock in it
                    pass
    finally:
        os.close(fd)  # releases the lock


def _lock(folder: Path, path: Path, flag: str, what: str) -> int:
    """An fd holding the flock of the file at `path` (created if missing) at the moment it was checked."""
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FdmError(f"{flag} {folder}: cannot create the folder ({e.strerror})") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed in between (an emptied run folder): again
            continue
        except OSError as e:  # e.g. a folder this user cannot write to
            raise FdmError(f"{flag} {folder}: cannot create the lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FdmError(f"{flag} {folder} is in use by another {what} (pid {holder}); wait for it "
                           f"to finish or choose another {flag}") from None
        if _names(path, fd):
            return fd
        os.close(fd)  # the previous holder removed this file before letting it go: lock the name's file


def _names(path: Path, fd: int) -> bool:
    """Whether `path` names the file open as `fd`."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)
