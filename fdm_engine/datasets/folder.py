"""A folder of .mp4/.avi/.gif videos, searched recursively (RaMViD, UCF-101, your own clips).

Splits, first rule that applies:
1. UCF-101 split lists anywhere under the folder: split "train" reads `trainlist01.txt`, "test"
   `testlist01.txt` ("train2"/"test3" pick the other folds). Entries are matched to files by name.
2. Sub-folders named after the split: `train/`, `test/` (the layout `fdm data make --format mp4`
   writes).
3. Otherwise there is one split holding every video; "train", "test" and "all" all name it.

Videos may differ in size and length: `clip` centre-crops each to a square and resizes it to
`image_size`, and random windows decode the whole video first (container frame counts are only
estimates).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from fdm_engine.datasets.base import DATASETS, FORMATS, VideoDataset, warn_bad
from fdm_engine.errors import FdmError
from fdm_engine.video_io import VIDEO_SUFFIXES

_SPLIT = re.compile(r"(train|test)(\d*)")


def find_videos(root: Path) -> list[Path]:
    """Video files under `root`, recursively, sorted; hidden files (ours: temporaries) skipped."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


@FORMATS.register("folder")
class VideoFolderDataset(VideoDataset):
    format = "folder"
    default_name = "folder"
    varied_videos = True

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(p.suffix.lower() in VIDEO_SUFFIXES for p in root.rglob("*"))

    @cached_property
    def all_videos(self) -> list[Path]:
        return find_videos(self.root)

    @staticmethod
    def split_list(root: Path, split: str) -> Path | None:
        """The UCF-101 list file for `split`, if the folder has one."""
        m = _SPLIT.fullmatch(split)
        if not m:
            return None
        name = f"{m[1]}list{int(m[2] or 1):02d}.txt"
        return next(iter(sorted(root.rglob(name))), None)

    @classmethod
    def split_names(cls, root: Path) -> list[str]:
        names = [s for s in ("train", "test") if cls.split_list(root, s) or (root / s).is_dir()]
        return names or ["all"]

    def list_videos(self, split: str) -> list[Path]:
        listing = self.split_list(self.root, split)
        if listing is not None:
            return self._from_list(listing)
        if (self.root / split).is_dir():
            videos = find_videos(self.root / split)
            if not videos:
                raise FdmError(f"{self.root / split}: no .mp4/.avi/.gif videos in split {split!r}")
            return videos
        names = self.split_names(self.root)
        if split not in ("train", "test", "all") or names != ["all"]:
            raise FdmError(f"{self.root}: no split {split!r} (this folder has: {', '.join(names)})")
        if not self.all_videos:
            raise FdmError(f"{self.root}: no .mp4/.avi/.gif videos here or below")
        return self.all_videos

    def _from_list(self, listing: Path) -> list[Path]:
        by_name = {p.name: p for p in self.all_videos}
        paths = []
        for line in listing.read_text().splitlines():
            if not line.strip():
                continue
            entry = line.split()[0]  # trainlist lines end in a class number
            path = by_name.get(Path(entry.replace("\\", "/")).name)
            if path is not None:
                paths.append(path)
                continue
            message = f"{listing}: lists {entry}, which is not under {self.root}"
            if not self.skip_bad:
                raise FdmError(message)
            warn_bad(message)
        if not paths:
            raise FdmError(f"{listing}: none of its videos are under {self.root}")
        return paths


DATASETS.register("folder", VideoFolderDataset)
