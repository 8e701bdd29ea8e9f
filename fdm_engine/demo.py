"""The shipped demo: a small FDM model sampled into a long video of a held-out bouncing-balls clip.

The model in `DEMO_CHECKPOINT` was trained by fdm itself (`fdm train --preset demo-balls`) on data
that `fdm data make` generates; its metadata records the training config and the data generator's
settings, so the demo can draw a fresh held-out video from the same generator (a seed stream no
training or test video uses), give its first frames to the model and compare what comes next.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fdm_engine.errors import FdmError

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "demo-balls.safetensors"
# The data the demo model was trained on: `fdm data make bouncing-balls --out data/bouncing-balls
# --num-videos 400 --num-test 40 --length 300 --size 32 --seed 0` (README, "The demo model").
DEMO_DATA = dict(name="bouncing-balls", num_videos=400, num_test=40, length=300, size=32, seed=0)
DEMO_PRESET = "demo-balls"
HELD_OUT_STREAM = 2  # generator seed stream: train videos use 0 and test videos 1 (datasets.procedural.make)


def held_out_video(meta: dict[str, Any], length: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """A video of the checkpoint's generator that no training or test video shares a stream with:
    (uint8 frames [T, H, W, C], ground-truth state)."""
    from fdm_engine.datasets.procedural.generators import GENERATORS

    data = meta.get("data")
    if not data or "name" not in data:
        raise FdmError("the checkpoint records no procedural dataset (extra.data), so the demo cannot "
                       "draw a held-out video for it")
    config = GENERATORS.get(data["name"]).from_dict(data.get("config", {}))
    rng = np.random.default_rng([int(data.get("seed", 0)) + seed, HELD_OUT_STREAM, 0])
    return config.generate(rng, length, int(data["size"]))


def side_by_side(real: np.ndarray, fake: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 [T, H, W, C] twice -> [T, H, 2W + gap, C]: real on the left, generated on the right."""
    bar = np.full((*real.shape[:2], gap, real.shape[3]), 255, np.uint8)
    return np.concatenate([real, bar, fake], axis=2)


def run_demo(out, checkpoint=DEMO_CHECKPOINT, length: int = 300, n_obs: int = 10, steps: int = 10,
             scheme: str = "hierarchy-2", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Sample `length` frames from `checkpoint` given the first `n_obs` frames of a held-out video;
    write the video, a real-vs-generated side-by-side (mp4 + PNG strip) and the scheme picture."""
    from fdm_engine.checkpoint import load_checkpoint
    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling
    from fdm_engine.video_io import write_strip, write_video
    from sampling_schemes import plan
    from sampling_schemes.render import render_png

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise FdmError(f"{checkpoint}: no such checkpoint")
    meta = load_checkpoint(checkpoint).extra
    real, _ = held_out_video(meta, length, seed)
    out.mkdir(parents=True, exist_ok=True)
    samples = out / "samples"
    shutil.rmtree(samples, ignore_errors=True)  # the demo's own folder from an earlier `make demo`
    write_video(out / "real.npy", real)
    cfg = SampleConfig(model=str(checkpoint), scheme=scheme, n_obs=n_obs, length=length, steps=steps,
                       obs=str(out / "real.npy"), seed=seed)
    start = time.perf_counter()
    summary = run_sampling(cfg, samples, progress=progress)
    wall = time.perf_counter() - start
    with np.load(samples / "video_0000.npz") as npz:  # exact pixels (the mp4 is lossy)
        fake = npz["frames"]
    paths = {"video": samples / "video_0000.mp4", "side_by_side": out / "side_by_side.mp4",
             "strip": out / "side_by_side.png", "scheme": out / "scheme.png"}
    both = side_by_side(real, fake)
    write_video(paths["side_by_side"], both)
    gap = np.full((*both.shape[:2], 4, both.shape[3]), 96, np.uint8)  # grey: tells one frame pair from the next
    write_strip(paths["strip"], np.concatenate([both, gap], axis=2), max_frames=12)
    render_png(plan(scheme, length, n_obs, summary["max_frames"]), str(paths["scheme"]),
               title=f"{scheme}: T={length}, {n_obs} given, K={summary['max_frames']}")
    return {"paths": paths, "wall_s": wall, "jobs": len(summary["jobs"]), "nfe": summary["nfe"],
            "length": length, "n_obs": n_obs, "scheme": scheme, "checkpoint": checkpoint}
