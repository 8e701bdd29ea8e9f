"""`make_dataset`: generate a procedural dataset into one of the published layouts.

    --format npy     OUT/{train,test}/{n}.npy + {n}_state.npz       (minerl / mazes layout, exact)
    --format carla   OUT/video_{i}.pt + coords_{i}.npy + state_{i}.npz + video_{train,test}.csv
    --format mp4     OUT/{train,test}/{n}.mp4 + {n}_state.npz       (a video folder, lossy)

plus OUT/dataset.json (the manifest: generator, its config, seed, sizes, layout). All is written
into a hidden sibling folder (.OUT.partial-*) renamed to OUT when complete, so an interrupted run
leaves no OUT (the partial folder is removed, except after SIGKILL). Video n of a split is drawn from its own
generator seeded by (seed, split, n): the same seed gives the same videos whatever --num-videos
is, and no two videos share a stream.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fdm_engine.datasets.procedural.generators import GENERATORS
from fdm_engine.errors import FdmError
from fdm_engine.limits import check_disk, check_memory
from fdm_engine.video_io import atomic_write, write_video

MANIFEST = "dataset.json"
SPLIT_IDS = {"train": 0, "test": 1}  # part of each video's seed


class SplitFolderWriter:
    """{split}/{n}{suffix} videos with {n}_state.npz beside them."""

    def __init__(self, out: Path, suffix: str, reader: str, fps: float):
        self.out, self.suffix, self.reader, self.fps = out, suffix, reader, fps

    def write(self, split: str, n: int, index: int, frames: np.ndarray, state: dict, coords_key: str) -> None:
        write_video(self.out / split / f"{n}{self.suffix}", frames, fps=self.fps)
        save_state(self.out / split / f"{n}_state.npz", state)

    def finish(self) -> None:
        pass


class CarlaWriter:
    """video_{i}.pt (uint8 tensor [T, H, W, C]), coords_{i}.npy (the generator's main per-frame
    state flattened to [T, D]), state_{i}.npz, and the two split CSVs."""

    reader = "carla"

    def __init__(self, out: Path, fps: float):
        self.out = out
        self.rows: dict[str, list[str]] = {s: [] for s in SPLIT_IDS}

    def write(self, split: str, n: int, index: int, frames: np.ndarray, state: dict, coords_key: str) -> None:
        with atomic_write(self.out / f"video_{index}.pt") as tmp:
            torch.save(torch.from_numpy(np.ascontiguousarray(frames)), tmp)
        coords = np.asarray(state[coords_key], np.float32).reshape(len(frames), -1)
        with atomic_write(self.out / f"coords_{index}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, coords, allow_pickle=False)
        save_state(self.out / f"state_{index}.npz", state)
        self.rows[split].append(f"{len(self.rows[split])},video_{index}.pt")

    def finish(self) -> None:
        for split, rows in self.rows.items():
            with atomic_write(self.out / f"video_{split}.csv") as tmp:
                tmp.write_text(",path\n" + "".join(r + "\n" for r in rows))


WRITERS = {
    "npy": lambda out, fps: SplitFolderWriter(out, ".npy", "npy", fps),
    "carla": CarlaWriter,
    "mp4": lambda out, fps: SplitFolderWriter(out, ".mp4", "folder", fps),
}


def save_state(path: Path, state: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in state.items()})


def make_dataset(name: str, out, num_videos: int, length: int, size: int,
                 seed: int = 0, format: str = "npy", num_test: int | None = None,
                 params: dict[str, Any] | None = None, fps: float = 10, progress: bool = False) -> Path:
    """Write `num_videos` training and `num_test` test videos (default max(1, num_videos // 10))
    of generator `name`, each uint8 [length, size, size, C], into `out`. Returns `out`."""
    config = GENERATORS.get(name).from_dict(params or {})
    num_test = max(1, num_videos // 10) if num_test is None else num_test
    _check_args(num_videos, num_test, length, size, format, fps)
    # One video is generated as float frames, then stored as uint8.
    channels = getattr(config, "channels", 3)
    check_memory(length * size * size * channels * (4 + 1), f"--length {length} --size {size}: one video",
                 "lower --size or --length")
    if format != "mp4":  # npy and carla store the raw bytes
        check_disk((num_videos + num_test) * length * size * size * channels, out,
                   f"{num_videos + num_test} videos of {length} frames of {size}x{size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FdmError(f"--out {out}: exists and is not an empty folder; choose a new one")
    # Everything goes into a new hidden sibling, renamed to `out` once complete: an interrupted run
    # leaves no `out` to be mistaken for a dataset (nor one that blocks the next run).
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    partial.mkdir()  # as a plain mkdir would (mkdtemp's are private to the user)
    try:
        _write(config, name, partial, num_videos, num_test, length, size, seed, format, fps, progress)
        os.replace(partial, out)  # an empty `out` is replaced too
    except BaseException:  # Ctrl-C included
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _write(config, name: str, out: Path, num_videos: int, num_test: int, length: int, size: int,
           seed: int, format: str, fps: float, progress: bool) -> None:
    writer = WRITERS[format](out, fps)
    jobs = [(s, n) for s, count in (("train", num_videos), ("test", num_test)) for n in range(count)]
    for index, (split, n) in enumerate(tqdm(jobs, desc=f"making {name}", unit="video", disable=not progress)):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], n])
        frames, state = config.generate(rng, length, size)
        writer.write(split, n, index, frames, state, config.coords_key)
    writer.finish()
    manifest = {"fdm_dataset": 1, "name": name, "format": format, "reader": writer.reader,
                "config": config.to_dict(), "seed": seed, "length": length, "size": size,
                "channels": int(frames.shape[-1]), "fps": fps, "splits": {"train": num_videos, "test": num_test}}
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a made dataset, or None where there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise FdmError(f"{path}: not a dataset manifest ({e})") from e
    if not isinstance(manifest, dict) or not {"name", "reader"} <= manifest.keys():
        raise FdmError(f"{path}: not a dataset manifest (needs \"name\" and \"reader\")")
    return manifest


def _check_args(num_videos: int, num_test: int, length: int, size: int, format: str, fps: float) -> None:
    if not fps > 0:
        raise FdmError(f"--fps must be > 0 (got {fps})")
    if num_videos < 1:
        raise FdmError(f"--num-videos must be >= 1 (got {num_videos})")
    if num_test < 0:
        raise FdmError(f"--num-test must be >= 0 (got {num_test})")
    if length < 1:
        raise FdmError(f"--length must be >= 1 (got {length})")
    if size < 8:
        raise FdmError(f"--size must be >= 8 (got {size})")
    if format not in WRITERS:
        raise FdmError(f"--format must be one of {', '.join(WRITERS)} (got {format!r})")
