"""The training data stream: seeded, sharded over ranks, resumable at any batch.

Epoch e visits the clips in the order of a DistributedSampler seeded by (seed, e); each rank
takes its share in micro-batches. Windows inside videos are seeded by (seed, e, video) in
`VideoClips`. So the stream is a function of (seed, world size, epoch, batch), and the position
{"epoch", "batch"} saved in a checkpoint is all a resumed run needs to continue it exactly.
Datasets smaller than one global batch are repeated within each epoch.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from trainers.distributed import DistEnv


class Repeated(Dataset):
    """`times` copies of a dataset back to back (item i is item i % n)."""

    def __init__(self, data: Dataset, times: int):
        self.data, self.times = data, times

    def __len__(self) -> int:
        return len(self.data) * self.times

    def __getitem__(self, i: int):
        return self.data[i % len(self.data)]


class DataStream:
    """Endless micro-batches [b, T, C, H, W] of training clips for this rank."""

    def __init__(self, clips, micro_batch: int, env: DistEnv, seed: int, workers: int = 0,
                 pin_memory: bool = False):
        self.clips = clips  # a VideoClips (has set_epoch)
        self.micro_batch = micro_batch
        self.env = env
        self.seed = seed
        self.workers = workers
        self.pin_memory = pin_memory
        times = max(1, math.ceil(env.world * micro_batch / len(clips)))
        self.sampler = DistributedSampler(Repeated(clips, times), num_replicas=env.world, rank=env.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.epoch = 0
        self.batch = 0  # micro-batches of this epoch already consumed
        self._it = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._it = None

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of `epoch` (indices into the repeated dataset)."""
        self.sampler.set_epoch(epoch)
        mine = list(self.sampler)
        n = len(mine) // self.micro_batch
        return [mine[i * self.micro_batch:(i + 1) * self.micro_batch] for i in range(n)]

    def _open(self) -> None:
        self.clips.set_epoch(self.epoch)
        todo = self.batches(self.epoch)[self.batch:]
        self._it = iter(DataLoader(self.sampler.dataset, batch_sampler=todo, num_workers=self.workers,
                                   pin_memory=self.pin_memory))

    def next(self) -> torch.Tensor:
        while True:
            if self._it is None:
                self._open()
            try:
                clips = next(self._it)
            except StopIteration:
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return clips
