"""Sets of videos for `fdm eval fvd`: lengths known up front, frames read one video at a time.

A set is named by one string, first rule that applies:
- a folder written by `fdm sample`: `video_NNNN.npz` (`frames` uint8 [T, H, W, C]), else
  `video_NNNN.mp4`/`.gif`, one per id in id order (the files `fdm eval video` reads);
- any other folder: its .mp4/.avi/.gif videos (searched recursively, sorted), read as stored;
- a dataset `NAME[:split[:index]]` (default split test): videos index, index + 1, ... read through
  the dataset's `clip`, at the frame size and channels of the other set when `like` is given
  (the way the model saw its data, as `fdm eval video` compares), and as many as `like` holds.

Whole sets are never held in memory: a long-video set (100 videos x 1000 frames) is gigabytes.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

from fdm_engine.errors import FdmError

_SAMPLE = re.compile(r"video_(\d{4,})\.(npz|mp4|gif)$")


@dataclass
class VideoSet:
    """`len(s)` videos; `s.lengths[i]` frames each (ffmpeg's estimate for .mp4/.avi in a plain folder)."""

    name: str
    lengths: list[int]
    frame_shape: tuple[int, int, int]  # (H, W, C) of the first video
    _read: Callable[[int, int], np.ndarray]  # (i, n) -> uint8 [>= n or all, H, W, C], frames from 0

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, i: int, start: int, length: int) -> np.ndarray:
        """Frames start .. start + length - 1 of video i: uint8 [length, H, W, C]."""
        frames = self._read(i, start + length)
        if len(frames) < start + length:
            raise FdmError(f"{self.name}: video {i} has {len(frames)} frames, fewer than the {start + length} "
                           f"needed; pass a smaller --frames (or --start)")
        return frames[start:start + length]


def open_video_set(spec: str, data_dir=None, count: int | None = None, like: VideoSet | None = None) -> VideoSet:
    """A folder (fdm samples or plain videos) or a dataset NAME[:split[:index]] -> VideoSet.

    count: keep the first `count` videos (a dataset set defaults to as many as `like` holds).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        out = _samples_set(spec, path) or _folder_set(spec, path)
    elif path.exists():
        raise FdmError(f"{spec}: a video set is a folder of videos or a dataset NAME[:split[:index]], not one file")
    else:
        out = _dataset_set(spec, data_dir, count, like)
    if count is not None:
        if count < 2 or count > len(out):
            raise FdmError(f"--num-videos {count}: {spec} holds {len(out)} videos (need 2 .. {len(out)})")
        out.lengths = out.lengths[:count]
    return out


def _samples_set(spec: str, folder: Path) -> VideoSet | None:
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("video_*")):
        m = _SAMPLE.match(path.name)
        if m and (int(m[1]) not in found or m[2] == "npz"):
            found[int(m[1])] = path
    if not found:
        return None
    paths = [found[i] for i in sorted(found)]
    shapes = [_npz_shape(p) if p.suffix == ".npz" else _probe_shape(p) for p in paths]

    def read(i: int, n: int) -> np.ndarray:
        from fdm_engine.video_io import read_npz_frames

        return read_npz_frames(paths[i]) if paths[i].suffix == ".npz" else _read_file(paths[i], n)

    return VideoSet(spec, [s[0] for s in shapes], shapes[0][1:], read)


def _folder_set(spec: str, folder: Path) -> VideoSet:
    from fdm_engine.datasets.folder import find_videos

    paths = find_videos(folder)
    if not paths:
        raise FdmError(f"{spec}: no video_NNNN.npz samples and no .mp4/.avi/.gif videos in this folder")
    shapes = [_probe_shape(p) for p in paths]
    return VideoSet(spec, [s[0] for s in shapes], shapes[0][1:], lambda i, n: _read_file(paths[i], n))


def _dataset_set(spec: str, data_dir, count: int | None, like: VideoSet | None) -> VideoSet:
    from fdm_engine.datasets import DATASETS, open_dataset, parse_dataset_ref
    from fdm_engine.video_io import to_uint8

    ref = parse_dataset_ref(spec)
    if ref.name not in DATASETS:  # most likely a mistyped folder (`samples/`): say that first
        raise FdmError(f"{spec}: no such folder, nor a dataset NAME[:split[:index]] "
                       f"(datasets: {', '.join(DATASETS.names())})")
    size, channels = (like.frame_shape[0], like.frame_shape[2]) if like else (None, None)
    ds = open_dataset(ref.name, data_dir, split=ref.split, image_size=size, channels=channels)
    available = len(ds) - ref.index
    n = count if count is not None else min(len(like), available) if like else available
    if n < 1 or n > available:
        raise FdmError(f"{spec}: split {ref.split!r} has {len(ds)} videos; {n} from index {ref.index} do not fit")
    ids = [ref.index + i for i in range(n)]

    def read(i: int, length: int) -> np.ndarray:
        return to_uint8(ds.clip(ids[i], length=min(length, ds.num_frames(ids[i]))))  # [T, S, S, C]

    return VideoSet(spec, [ds.num_frames(i) for i in ids], (ds.image_size, ds.image_size, ds.channels), read)


def _npz_shape(path: Path) -> tuple[int, ...]:
    """[T, H, W, C] of `frames` from the npz header alone (no decompression of the pixels)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("frames.npy") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
            shape, _, dtype = header(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise FdmError(f"{path}: cannot read `frames` from this npz ({e})") from e
    if dtype != np.uint8 or len(shape) != 4:
        raise FdmError(f"{path}: `frames` must be uint8 [T, H, W, C] (got {dtype} {list(shape)})")
    return shape


def _probe_shape(path: Path) -> tuple[int, ...]:
    from fdm_engine.video_io import probe_video

    m = probe_video(path)
    return m.num_frames, m.height, m.width, m.channels


def _read_file(path: Path, n: int) -> np.ndarray:
    from fdm_engine.video_io import read_video

    return read_video(path, n)
