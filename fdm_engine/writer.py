"""Writes one sampled video in the requested formats (the last stage of the data flow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fdm_engine.files import atomic_write


def write_outputs(out: Path, video_id: int, frames: torch.Tensor, formats, save_raw: bool = False,
                  fps: int = 10) -> list[Path]:
    """frames [T, C, H, W] in model space -> OUT/video_{id:04d}.{mp4,gif,npz,png}; returns paths.

    The npz holds `frames` (uint8 [T, H, W, C]) and, with save_raw, `raw` (float32 [T, C, H, W],
    unclipped).
    """
    from fdm_engine.video_io import to_uint8, write_strip, write_video

    stem = Path(out) / f"video_{video_id:04d}"
    pixels = to_uint8(frames)  # [T, H, W, C]
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt in ("mp4", "gif"):
            write_video(path, pixels, fps=fps)
        elif fmt == "png":
            write_strip(path, pixels)
        elif fmt == "npz":
            arrays = {"frames": pixels}
            if save_raw:
                arrays["raw"] = frames.float().numpy()
            with atomic_write(path) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        written.append(path)
    return written
