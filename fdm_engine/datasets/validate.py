"""Recognising a dataset folder, and validating one: every file opened and decoded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from fdm_engine.datasets.base import DATASETS, FORMATS, VideoDataset, warn_bad
from fdm_engine.datasets.procedural import open_made, read_manifest
from fdm_engine.errors import FdmError

# Layouts in the order they are tried, with the dataset name each one reads as by default.
_LAYOUTS = (("carla", "carla_no_traffic"), ("npy", "minerl"), ("folder", "folder"))


def detect_dataset(root) -> str:
    """The dataset name for folder `root`: its manifest's (made by `fdm data make`); else, for the
    first layout that matches, the folder's own name when that is a dataset read with this
    layout (a folder called mazes_cwvae), else the layout's default name."""
    root = Path(root)
    if not root.is_dir():
        raise FdmError(f"{root}: no such folder")
    manifest = read_manifest(root)
    if manifest is not None:
        return manifest["name"]
    for layout, default in _LAYOUTS:
        reader = FORMATS.get(layout)
        if reader.detect(root):
            same = root.name in DATASETS and DATASETS.get(root.name) is reader
            return root.name if same else default
    raise FdmError(f"{root}: no dataset found (no dataset.json, video_train.csv, train/N.npy or "
                   f".mp4/.avi/.gif files); name one with --dataset")


def split_names(name: str, root) -> list[str]:
    """The splits folder `root` holds for dataset `name` (["train", "test"] when the reader
    cannot tell)."""
    root = Path(root)
    factory = DATASETS.get(name)
    reader = factory if isinstance(factory, type) and issubclass(factory, VideoDataset) else None
    if factory is open_made:
        manifest = read_manifest(root)
        reader = FORMATS.get(manifest["reader"]) if manifest else None
    names = reader.split_names(root) if reader else ["train", "test"]
    return sorted(names, key=lambda s: (s != "train", s != "test", s))  # train first, then test


@dataclasses.dataclass
class ValidationReport:
    """What decoding every video of one split found."""

    checked: int
    bad: list[str]  # messages of the files skipped (skip_bad only)
    min_length: int
    max_length: int
    shapes: list[tuple[int, int, int]]  # distinct (H, W, C), first seen first


def validate(dataset: VideoDataset, progress: bool = False) -> ValidationReport:
    """Decode every video (and load every state file) of `dataset`.

    A bad file raises FdmError naming it; with dataset.skip_bad it is warned about, listed in the
    report and dropped from the dataset.
    """
    bad, keep, lengths, shapes = [], [], [], []
    bar = tqdm(range(len(dataset)), desc=f"checking {dataset.split}", unit="video", disable=not progress)
    for i in bar:
        try:
            frames = dataset.read(i)
            dataset.state(i)
        except FdmError as e:
            if not dataset.skip_bad:
                raise
            warn_bad(str(e))
            bad.append(str(e))
            continue
        keep.append(dataset.paths[i])
        lengths.append(len(frames))
        if frames.shape[1:] not in shapes:
            shapes.append(frames.shape[1:])
    if not keep:
        raise FdmError(f"{dataset.root}: no readable videos in split {dataset.split!r} ({len(bad)} bad)")
    dataset.paths = keep
    return ValidationReport(len(lengths) + len(bad), bad, min(lengths), max(lengths), shapes)
