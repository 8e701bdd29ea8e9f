"""A procedural dataset's split generated on the fly, with no folder: the very videos (and states)
`fdm data make` would write with the same settings, since video n of a split is always drawn from
the generator seeded by (seed, split, n) (make.py). Used where a run names a procedural dataset
that has no folder here (`fdm sample --obs bouncing-balls:test`, `fdm eval video`).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fdm_engine.datasets.base import VideoDataset
from fdm_engine.datasets.procedural.generators import GENERATORS
from fdm_engine.datasets.procedural.make import SPLIT_IDS
from fdm_engine.errors import FdmError
from fdm_engine.video_io import VideoMeta


class GeneratedSplit(VideoDataset):
    """One split of generator `name`: `num_videos` videos (None: as many as asked for) of `length`
    frames of size x size, drawn as `make_dataset(name, ..., seed=seed, params=params)` draws them."""

    format = "generated"

    def __init__(self, name: str, split: str, *, length: int, size: int, seed: int = 0,
                 params: dict[str, Any] | None = None, num_videos: int | None = None,
                 image_size: int | None = None, channels: int | None = None):
        # No folder and no files, so none of VideoDataset.__init__'s checks apply.
        if split not in SPLIT_IDS:
            raise FdmError(f"{name}: generated data has the splits {', '.join(SPLIT_IDS)} (got {split!r})")
        self.config = GENERATORS.get(name).from_dict(params or {})
        self.name, self.split, self.skip_bad = name, split, False
        self.root = Path(f"<{name} generated, seed {seed}>")
        self.gen_length, self.size, self.seed = length, size, seed
        self.num_videos = sys.maxsize if num_videos is None else num_videos
        self._image_size, self._channels = image_size, channels
        self._meta = {}
        self._generate = functools.lru_cache(maxsize=2)(self._draw)  # clip() then state() of one video

    def _draw(self, i: int) -> tuple[np.ndarray, dict]:
        return self.config.generate(np.random.default_rng([self.seed, SPLIT_IDS[self.split], i]),
                                    self.gen_length, self.size)

    def __len__(self) -> int:
        return self.num_videos

    def path(self, i: int) -> Path:
        if not 0 <= i < len(self):
            raise FdmError(f"video index {i} out of range: split {self.split!r} of {self.root} "
                           f"holds {len(self)} videos")
        return self.root / str(i)

    def meta(self, i: int) -> VideoMeta:
        self.path(i)
        return VideoMeta(self.gen_length, self.size, self.size, int(getattr(self.config, "channels", 3)), True)

    @property
    def video_length(self) -> int:
        return self.gen_length

    def read(self, i: int, max_frames: int | None = None) -> np.ndarray:
        self.path(i)
        return self._generate(i)[0][:max_frames]

    def state(self, i: int) -> dict[str, np.ndarray]:
        self.path(i)
        return dict(self._generate(i)[1])
