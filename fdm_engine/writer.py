"""Writes one sampled video in the requested formats (the last stage of the data flow).

Formats live in a registry, `OUTPUT_FORMATS` (name -> writer), so a new one is one function:

    @OUTPUT_FORMATS.register("webm")
    def write_webm(path, pixels, frames, options): ...

A writer gets the target path (OUT/video_NNNN.<name>), the frames as uint8 [T, H, W, C], the
frames in model space (float [T, C, H, W], for raw outputs) and the WriteOptions. Plug-ins use the
entry-point group `fdm.output_formats`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fdm_engine.files import atomic_write
from fdm_engine.registry import Registry


@dataclasses.dataclass(frozen=True)
class WriteOptions:
    save_raw: bool = False  # npz: also the unclipped float frames
    fps: int = 10  # mp4 / gif


FormatWriter = Callable[[Path, np.ndarray, torch.Tensor, WriteOptions], None]
OUTPUT_FORMATS: Registry[FormatWriter] = Registry("output format", group="fdm.output_formats")


def _movie(path: Path, pixels, frames, options: WriteOptions) -> None:
    from fdm_engine.video_io import write_video

    write_video(path, pixels, fps=options.fps)


OUTPUT_FORMATS.register("mp4", _movie)
OUTPUT_FORMATS.register("gif", _movie)


@OUTPUT_FORMATS.register("png")
def _strip(path: Path, pixels, frames, options: WriteOptions) -> None:
    from fdm_engine.video_io import write_strip

    write_strip(path, pixels)


@OUTPUT_FORMATS.register("npz")
def _arrays(path: Path, pixels, frames, options: WriteOptions) -> None:
    """`frames` (uint8 [T, H, W, C]) and, with save_raw, `raw` (float32 [T, C, H, W], unclipped)."""
    import zipfile

    arrays = {"frames": pixels}
    if options.save_raw:
        arrays["raw"] = frames.float().numpy()
    # Stored, not deflated, as np.savez writes it: deflate (even at level 1) costs ~0.1 s per MB of
    # frames on a loaded core, more than the oracle's network time for the same frames, and the
    # viewing formats (mp4, png) are the compressed ones. Fixed entry dates: same frames, same file.
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def video_stem(out: Path, video_id: int) -> Path:
    return Path(out) / f"video_{video_id:04d}"


def write_outputs(out: Path, video_id: int, frames: torch.Tensor, formats, save_raw: bool = False,
                  fps: int = 10) -> list[Path]:
    """frames [T, C, H, W] in model space -> OUT/video_{id:04d}.<format> per format; returns paths."""
    from fdm_engine.video_io import to_uint8

    stem = video_stem(out, video_id)
    pixels = to_uint8(frames)  # [T, H, W, C]
    options = WriteOptions(save_raw=save_raw, fps=fps)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        OUTPUT_FORMATS.get(fmt)(path, pixels, frames, options)
        written.append(path)
    return written


class BackgroundWriter:
    """Writes finished videos on a thread while the executor samples the next ones.

    `submit(video_id, job)` queues a write (blocking while `max_pending` are queued, so memory
    stays bounded); `done()` returns the ids written since the last call; `close()` waits for the
    rest. An error in a write is raised in the caller's thread by the next call.
    """

    def __init__(self, max_pending: int = 1):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._done: list[int] = []
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="fdm-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            video_id, job = item
            try:
                if self._error is None:
                    job()
                    with self._lock:
                        self._done.append(video_id)
            except BaseException as e:  # handed to the caller's thread
                self._error = e
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, video_id: int, job) -> None:
        self._raise()
        self._queue.put((video_id, job))

    def done(self) -> list[int]:
        self._raise()
        with self._lock:
            out, self._done = self._done, []
        return out

    def close(self) -> list[int]:
        """Wait for every queued write; returns the ids not yet reported by done()."""
        self._queue.put(None)
        self._thread.join()
        return self.done()
