"""Readers for the published FDM datasets, read-only (docs/datasets.md).

    carla_no_traffic   DIR/video_{i}.pt        uint8 tensor [T, H, W, C] (1000 x 128 x 128 x 3)
                       DIR/coords_{i}.npy      per-frame world coordinates
                       DIR/video_{train,test}.csv   a header line, then lines `k,path/to/video_{i}.pt`
    minerl             DIR/{train,test}/{n}.npy     uint8 [T, 64, 64, 3] (T = 500)
    mazes_cwvae        DIR/{train,test}/{n}.npy     uint8 [T, 64, 64, 3] (T = 300)

The CSVs hold paths from the machine that made them, so only the file name counts: the video is
looked for beside the CSV (as the published loader does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fdm_engine.datasets.base import DATASETS, FORMATS, VideoDataset, int_stem_sorted
from fdm_engine.errors import FdmError


@FORMATS.register("carla")
class CarlaDataset(VideoDataset):
    """`video_{i}.pt` tensors listed by `video_{split}.csv`; state: `coords_{i}.npy` (and
    `state_{i}.npz` for procedural data written in this format)."""

    format = "carla"
    default_name = "carla_no_traffic"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / f"video_{s}.csv").is_file() for s in ("train", "test"))

    @classmethod
    def split_names(cls, root: Path) -> list[str]:
        return sorted(p.stem[len("video_"):] for p in root.glob("video_*.csv"))

    def list_videos(self, split: str) -> list[Path]:
        csv = self.root / f"video_{split}.csv"
        if not csv.is_file():
            raise FdmError(f"{csv}: no such file (a {self.name} folder lists its videos in "
                           f"video_train.csv and video_test.csv)")
        paths = []
        for line in csv.read_text().splitlines():
            _, _, entry = line.partition(",")
            entry = entry.strip()
            if entry.endswith(".pt"):  # the header (",path") and blank lines carry no video
                paths.append(self.root / entry.replace("\\", "/").split("/")[-1])
        if not paths:
            raise FdmError(f"{csv}: lists no videos (expected lines `k,video_i.pt`)")
        return paths

    def state_path(self, path: Path) -> Path | None:
        return path.with_name(f"state_{path.stem[len('video_'):]}.npz")

    def state(self, i: int) -> dict[str, np.ndarray]:
        """The procedural state where there is one, else {"coords": [T, D]} from coords_{i}.npy."""
        state = super().state(i)
        coords = self.path(i).with_name(f"coords_{self.path(i).stem[len('video_'):]}.npy")
        if state or not coords.is_file():
            return state
        try:
            return {"coords": np.load(coords, allow_pickle=False)}
        except Exception as e:
            raise FdmError(f"{coords}: cannot read coordinates ({e})") from e


@FORMATS.register("npy")
class NpySplitDataset(VideoDataset):
    """`{split}/{n}.npy` uint8 arrays [T, H, W, C]; state (procedural data): `{n}_state.npz`."""

    format = "npy"
    default_name = "minerl"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(int_stem_sorted((root / s).glob("*.npy")) for s in ("train", "test") if (root / s).is_dir())

    @classmethod
    def split_names(cls, root: Path) -> list[str]:
        # train/ and test/ count even when empty, so that `fdm data info` reports an empty split.
        return sorted(p.name for p in root.iterdir()
                      if p.is_dir() and (p.name in ("train", "test") or int_stem_sorted(p.glob("*.npy"))))

    def list_videos(self, split: str) -> list[Path]:
        folder = self.root / split
        if not folder.is_dir():
            raise FdmError(f"{folder}: no such folder (a {self.name} dataset holds train/ and test/ "
                           f"folders of N.npy files)")
        paths = int_stem_sorted(folder.glob("*.npy"))
        if not paths:
            raise FdmError(f"{folder}: no N.npy videos in split {split!r}")
        return paths


DATASETS.register("carla_no_traffic", CarlaDataset)
DATASETS.register("minerl", NpySplitDataset)
DATASETS.register("mazes_cwvae", NpySplitDataset)
