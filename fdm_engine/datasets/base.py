"""The dataset object every reader returns, the registries, and `open_dataset`.

A reader is a `VideoDataset` subclass that knows one on-disk layout (a *format*): which files
make up a split (`list_videos`), and where a video's ground-truth state lies (`state_path`).
Everything else (windows, pixel conversion, resizing, bad-file handling) lives here once.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Callable, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fdm_engine.datasets.paths import resolve_data_dir
from fdm_engine.errors import FdmError
from fdm_engine.registry import Registry
from fdm_engine.video_io import VideoMeta, from_uint8, probe_video, read_video


class BadVideoWarning(UserWarning):
    """A video left out because the dataset was opened with skip_bad=True."""


def warn_bad(message: str) -> None:
    warnings.warn(f"skipping {message}", BadVideoWarning, stacklevel=3)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A one-split summary, as `fdm data info` prints it."""

    name: str
    format: str
    root: str
    split: str
    num_videos: int
    min_length: int  # frames in the shortest / longest video (estimates for .mp4/.avi unless validated)
    max_length: int
    height: int  # native frame size of the first video
    width: int
    channels: int
    image_size: int  # side of the square frames `clip` returns
    clip_channels: int  # C of the frames `clip` returns


class VideoDataset:
    """One split of a dataset: `len()` videos, each uint8 [T, H, W, C] on disk.

    Subclasses implement `list_videos` (and `detect`, `split_names`, `state_path` where they
    differ from the defaults). Construct them through `open_dataset`.
    """

    format: ClassVar[str] = ""  # layout name, e.g. "npy" ({split}/{n}.npy)
    default_name: ClassVar[str] = ""
    # True where videos may differ in size (so `clip` resizes each one) and where frame counts
    # are only estimates until decoded (so a video's first random window decodes all of it).
    varied_videos: ClassVar[bool] = False

    def __init__(self, root, split: str = "train", *, name: str | None = None, skip_bad: bool = False,
                 image_size: int | None = None, channels: int | None = None, min_length: int | None = None):
        self.root = Path(root)
        self.name = name or self.default_name or self.format
        self.split = split
        self.skip_bad = skip_bad
        if not self.root.is_dir():
            raise FdmError(f"{self.root}: no such folder")
        if image_size is not None and image_size < 1:
            raise FdmError(f"image size must be >= 1 (got {image_size})")
        if channels not in (None, 1, 3):
            raise FdmError(f"channels must be 1 or 3 (got {channels})")
        self._image_size = image_size
        self._channels = channels
        self.paths: list[Path] = self.list_videos(split)
        if not self.paths:
            raise FdmError(f"{self.root}: split {split!r} of {self.name} holds no videos")
        self._meta: dict[Path, VideoMeta] = {}
        if skip_bad or min_length:
            self.scan(min_length)

    # ------------------------------------------------------------------ reader hooks

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether `root` looks like this format (used when no dataset name is given)."""
        return False

    @classmethod
    def split_names(cls, root: Path) -> list[str]:
        """The splits folder `root` holds in this layout."""
        return ["train", "test"]

    def list_videos(self, split: str) -> list[Path]:
        """The video files of `split`, in index order. FdmError names what is missing."""
        raise NotImplementedError

    def state_path(self, path: Path) -> Path | None:
        """Where the ground-truth state of the video at `path` is stored, if anywhere."""
        return path.with_name(f"{path.stem}_state.npz")

    # ------------------------------------------------------------------ the API

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {str(self.root)!r}, split={self.split!r}, {len(self)} videos)"

    def path(self, i: int) -> Path:
        if not 0 <= i < len(self.paths):
            raise FdmError(f"video index {i} out of range: split {self.split!r} of {self.root} "
                           f"holds {len(self.paths)} videos")
        return self.paths[i]

    def meta(self, i: int) -> VideoMeta:
        """Frame count and size of video i, from its header (cached)."""
        path = self.path(i)
        if path not in self._meta:
            self._meta[path] = probe_video(path)
        return self._meta[path]

    def num_frames(self, i: int) -> int:
        return self.meta(i).num_frames

    @property
    def video_length(self) -> int:
        """Frames in the shortest video (the longest window every video can give)."""
        return min(self.num_frames(i) for i in range(len(self)))

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the first video as stored."""
        m = self.meta(0)
        return m.height, m.width, m.channels

    @property
    def image_size(self) -> int:
        """Side of the square frames `clip` returns: the requested size, else min(H, W)."""
        h, w, _ = self.frame_shape
        return self._image_size or min(h, w)

    @property
    def channels(self) -> int:
        """C of what `clip` returns: the requested channels, else the videos' own."""
        return self._channels or self.frame_shape[2]

    def read(self, i: int, max_frames: int | None = None) -> np.ndarray:
        """Video i as stored: uint8 [T, H, W, C] (the first `max_frames` frames if given)."""
        path = self.path(i)
        frames = read_video(path, max_frames)
        if max_frames is None or len(frames) < max_frames:  # decoded to the end: the count is exact
            t, h, w, c = frames.shape
            self._meta[path] = VideoMeta(t, h, w, c, exact=True)
        if not self.varied_videos and i != 0 and frames.shape[1:] != self.frame_shape:
            raise FdmError(f"{path}: frames are {list(frames.shape[1:])}, but the split's first video "
                           f"has {list(self.frame_shape)}")
        return frames

    def clip(self, i: int, length: int | None = None, start: int | np.random.Generator = 0) -> torch.Tensor:
        """Frames start..start+length-1 of video i as float [T, C, S, S] in [-1, 1], S = image_size.

        start: a frame index, or a numpy Generator to draw a uniformly random window.
        length None: the whole video. Frames are centre-cropped to a square and resized to S.
        """
        path = self.path(i)
        frames = None
        if isinstance(start, np.random.Generator):
            if length is None:
                raise FdmError("a random window needs a length")
            meta = self._meta.get(path) if self.varied_videos else self.meta(i)
            if meta is None or not meta.exact:
                frames = self.read(i)  # only decoding tells the true length (then it is cached)
            total = len(frames) if frames is not None else meta.num_frames
            if total < length:
                raise FdmError(f"{path}: {total} frames, fewer than the {length} requested")
            start = int(start.integers(0, total - length + 1))
        if start < 0:
            raise FdmError(f"window start must be >= 0 (got {start})")
        if frames is None:
            frames = self.read(i, None if length is None else start + length)
        if length is not None:
            if len(frames) < start + length:
                raise FdmError(f"{path}: {len(frames)} frames, fewer than the {start + length} needed "
                               f"for {length} frames from frame {start}")
            frames = frames[start:start + length]
        return self.to_model(frames)

    def to_model(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, C] -> float [T, C', S, S] in [-1, 1]: centre crop to a square, resize,
        and convert to the requested channels (grey = mean of RGB; RGB = grey repeated)."""
        x = from_uint8(frames)  # [T, C, H, W]
        if self._channels and x.shape[1] != self._channels:
            x = x.mean(1, keepdim=True) if self._channels == 1 else x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top:top + side, left:left + side]
        if side != self.image_size:
            # antialias: downsampling by large factors would alias otherwise
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=side > self.image_size).clamp_(-1, 1)
        return x.contiguous()

    def state(self, i: int) -> dict[str, np.ndarray]:
        """Ground-truth state saved beside video i ({} when there is none); arrays per frame
        have T first."""
        path = self.state_path(self.path(i))
        if path is None or not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            raise FdmError(f"{path}: cannot read state ({e})") from e

    def windows(self, length: int, train: bool = True, seed: int = 0):
        """A torch Dataset of `length`-frame windows: random (seeded) in training, from frame 0
        in evaluation. See `VideoClips`."""
        from fdm_engine.datasets.windows import VideoClips

        return VideoClips(self, length, train=train, seed=seed)

    def scan(self, min_length: int | None = None) -> list[str]:
        """Open every file's header; check dtype, shape and (when given) length.

        A bad file raises FdmError naming it, or with skip_bad is warned about and dropped.
        Returns the messages of the dropped files.
        """
        bad, keep = [], []
        first: tuple[int, int, int] | None = None
        for path in self.paths:
            try:
                m = self._meta.get(path) or probe_video(path)
                self._meta[path] = m
                if min_length and m.exact and m.num_frames < min_length:
                    raise FdmError(f"{path}: {m.num_frames} frames, fewer than the {min_length} requested")
                shape = (m.height, m.width, m.channels)
                if not self.varied_videos and first is not None and shape != first:
                    raise FdmError(f"{path}: frames are {list(shape)}, but the split's first video has {list(first)}")
                first = first or shape
                keep.append(path)
            except FdmError as e:
                if not self.skip_bad:
                    raise
                warn_bad(str(e))
                bad.append(str(e))
        if not keep:
            raise FdmError(f"{self.root}: no usable videos in split {self.split!r} ({len(bad)} skipped)")
        self.paths = keep
        return bad

    def info(self) -> DatasetInfo:
        """Summary of this split (reads every header)."""
        lengths = [self.num_frames(i) for i in range(len(self))]
        h, w, c = self.frame_shape
        return DatasetInfo(self.name, self.format, str(self.root), self.split, len(self), min(lengths),
                           max(lengths), h, w, c, self.image_size, self.channels)


# name -> factory(root, split, *, name, skip_bad, image_size, channels, min_length) -> VideoDataset
DatasetFactory = Callable[..., VideoDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset", group="fdm.datasets")
# layout name -> reader class, for datasets whose layout is recorded (procedural) or detected
FORMATS: Registry[type[VideoDataset]] = Registry("dataset format")


def open_dataset(name: str, data_dir=None, split: str = "train", *, skip_bad: bool = False,
                 image_size: int | None = None, channels: int | None = None,
                 min_length: int | None = None) -> VideoDataset:
    """Open one split of the dataset registered as `name`, from `resolve_data_dir(name, data_dir)`.

    skip_bad: warn about bad files (BadVideoWarning) and leave them out instead of raising.
    image_size: side of the frames `clip` returns (default: the videos' own size).
    channels: 1 or 3, channels of the frames `clip` returns (default: the videos' own).
    min_length: videos shorter than this count as bad (checked from headers at open).
    """
    factory = DATASETS.get(name)  # unknown names fail before the folder is looked for
    root = resolve_data_dir(name, data_dir)
    return factory(root, split, name=name, skip_bad=skip_bad, image_size=image_size, channels=channels,
                   min_length=min_length)


class DatasetRef(NamedTuple):
    name: str
    split: str
    index: int


def parse_dataset_ref(spec: str, default_split: str = "test") -> DatasetRef:
    """"NAME[:split[:index]]" (as in `fdm sample --obs`) -> DatasetRef; index defaults to 0."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise FdmError(f"dataset reference {spec!r}: expected NAME[:split[:index]]")
    split = parts[1] if len(parts) > 1 and parts[1] else default_split
    try:
        index = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise FdmError(f"dataset reference {spec!r}: index must be an integer (got {parts[2]!r})") from None
    if index < 0:
        raise FdmError(f"dataset reference {spec!r}: index must be >= 0")
    return DatasetRef(parts[0], split, index)


def int_stem_sorted(paths) -> list[Path]:
    """Files named {n}.ext, in numeric order (so 10.npy comes after 9.npy)."""
    return sorted((p for p in paths if p.stem.isdigit()), key=lambda p: int(p.stem))
