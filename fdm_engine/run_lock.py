"""One process per run folder: an exclusive, non-blocking lock on RUN_DIR/.fdm-lock.

    with run_folder_lock(run_dir, flag="--run-dir"):
        ...  # write checkpoints, metrics, videos

A second `fdm train` (or `fdm sample`) on the same folder gets one FdmError line instead of
interleaving its records or overwriting the first one's files. The lock is flock(2): the kernel
drops it when the holder exits, however it exits, so a killed run never leaves a stale lock.
The file itself stays (it is tiny and hidden); it holds the holder's pid for the message.
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

    A folder this call created and that is empty again afterwards (a run that failed before
    writing anything) is removed, so a failed start leaves nothing behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FdmError(f"{flag} {folder}: cannot create the folder ({e.strerror})") from None
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FdmError(f"{flag} {folder} is in use by another {what} (pid {holder}); wait for it "
                           f"to finish or choose another {flag}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            if created and [p.name for p in folder.iterdir()] == [name]:
                path.unlink()  # still locked by us: nobody else can be using this inode
                folder.rmdir()
    finally:
        os.close(fd)  # releases the lock
