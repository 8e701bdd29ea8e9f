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
                  fps: int = 10, pixels: np.ndarray | None = None) -> list[Path]:
    """frames [T, C, H, W] in model space -> OUT/video_{id:04d}.<format> per format; returns paths.

    pixels: to_uint8(frames) when the caller made it already (as frames were made, off the
    sampling thread); None: converted here.
    """
    from fdm_engine.video_io import to_uint8

    stem = video_stem(out, video_id)
    pixels = to_uint8(frames) if pixels is None else pixels  # [T, H, W, C]
    options = WriteOptions(save_raw=save_raw, fps=fps)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        OUTPUT_FORMATS.get(fmt)(path, pixels, frames, options)
        written.append(path)
    return written


class Pixels:
    """A video's uint8 frames, converted as its jobs finish (on the background thread, from each
    job's output) so that writing a finished video is a file write, not a pass over its float frames.

    Frames that may still change (a per-frame job leaves them part-way) or were restored on resume
    are converted when the video is written.
    """

    def __init__(self, length: int, frame_shape: tuple):
        c, h, w = frame_shape
        self.array = np.empty((length, h, w, c), dtype=np.uint8)
        self.ready = np.zeros(length, dtype=bool)

    def put(self, indices, frames: torch.Tensor, final: bool) -> None:
        """frames [n, C, H, W] at `indices`; final: they will not change (else converted when written)."""
        from fdm_engine.video_io import to_uint8

        index = list(indices)
        if final:
            self.array[index] = to_uint8(frames)
        self.ready[index] = final

    def of(self, frames: torch.Tensor) -> np.ndarray:
        """The whole video's uint8 frames, converting those not converted yet from `frames` [T, C, H, W]."""
        from fdm_engine.video_io import to_uint8

        todo = np.flatnonzero(~self.ready)
        if len(todo):
            self.array[todo] = to_uint8(frames[torch.from_numpy(todo)])
            self.ready[todo] = True
        return self.array


class Background:
    """Runs submitted work in order on one thread: a round's journal records and commit, a
    finished video's outputs, forgetting a written video's journal (sample_run.py).

    `submit(fn)` queues (blocking while `max_pending` are queued, so memory stays bounded);
    `wait()` returns once everything submitted is done; `close()` waits and stops the thread.
    A failure is never swallowed: the work after it is skipped (a journal that failed is not
    committed, a video whose outputs failed is not marked written) and the error is raised in the
    caller's thread by the next submit, wait or close.
    """

    def __init__(self, max_pending: int = 2, name: str = "fdm-writer"):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None  # the first failure; the work after it is skipped
        self._reported = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                if fn is None:
                    return
                if self._error is None:
                    fn()
            except BaseException as e:  # handed to the caller's thread
                self._error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def submit(self, fn: Callable[[], None]) -> None:
        self._raise()
        if self._closed or self._error is not None:
            raise RuntimeError("Background.submit after close or a failure")
        self._queue.put(fn)

    def wait(self) -> None:
        self._queue.join()
        self._raise()

    def close(self, check: bool = True) -> None:
        """Finish the queued work and stop; check=False (unwinding another error): do not raise."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if check:
            self._raise()
