"""`VideoClips`: a torch Dataset of fixed-length windows, for training and evaluation loaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fdm_engine.datasets.base import VideoDataset, warn_bad
from fdm_engine.errors import FdmError


class VideoClips(Dataset):
    """Item i: a `length`-frame window of video i, float [T, C, S, S] in [-1, 1].

    train=True: the window starts at a uniformly random frame drawn from a generator seeded by
    (seed, epoch, i), so a run is reproducible whatever the loader's worker count; call
    `set_epoch` each epoch for fresh windows. train=False: every window starts at frame 0.

    With the dataset opened skip_bad=True, a video that fails to read (corrupt, too short) is
    warned about once and item i comes from the next readable video instead.
    """

    def __init__(self, videos: VideoDataset, length: int, train: bool = True, seed: int = 0):
        if length < 1:
            raise FdmError(f"clip length must be >= 1 (got {length})")
        self.videos = videos
        self.length = length
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._bad: set[int] = set()  # per process: each loader worker learns on its own

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.videos)
        for j in ((i + k) % n for k in range(n)):
            if j in self._bad:
                continue
            start = np.random.default_rng([self.seed, self.epoch, j]) if self.train else 0
            try:
                return self.videos.clip(j, self.length, start)  # [T, C, S, S]
            except FdmError as e:
                if not self.videos.skip_bad:
                    raise
                self._bad.add(j)
                warn_bad(str(e))
        raise FdmError(f"{self.videos.root}: no video in split {self.videos.split!r} gives "
                       f"{self.length} readable frames")
