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
    arrays = {"frames": pixels}
    if options.save_raw:
        arrays["raw"] = frames.float().numpy()
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def video_stem(out: Path, video_id: int) -> Path:
    return Path(out) / f"video_{video_id:04d}"


def write_outputs(out: Path, video_id: int, frames: torch.Tensor, formats, save_raw: bool = False,
                  fps: int = 10) -> list[Path]:
    """frames [T, C, H, W] in model space -> OUT/video_{id:04d}.<format> per format; returns paths."""
    from fdm_engine.video_io import to_uint8

    stem = video_stem(out, video_id)
    pixels = to_uint8(frames)  # [T, H, W, C]
    options = WriteOptions(save_raw=save_raw, fps=fps)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        OUTPUT_FORMATS.get(fmt)(path, pixels, frames, options)
        written.append(path)
    return written
