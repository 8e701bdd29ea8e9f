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


def labelled_strip(rows: dict[str, np.ndarray], n_obs: int, max_frames: int = 12, scale: int = 2,
                   gap: int = 4) -> np.ndarray:
    """Evenly spaced frames (first and last included) of videos of one length, one row per video:
    uint8 [H', W', 3], each row named on its left (the dict's keys) and each column by its frame
    number above ("given" on the frames the model was given). Frames are enlarged `scale` times
    (nearest) so the labels' small font stays readable beside them."""
    from PIL import Image, ImageDraw, ImageFont

    videos = [np.repeat(np.repeat(v, scale, axis=1), scale, axis=2) for v in rows.values()]
    length, h, w, c = videos[0].shape
    idx = np.unique(np.rint(np.linspace(0, length - 1, max(1, min(max_frames, length)))).astype(int))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heads = [f"{t} given" if t < n_obs else str(t) for t in idx]
    text_h = max(draw.textbbox((0, 0), t, font=font)[3] for t in [*rows, "frame", *heads])
    left = int(max(draw.textlength(t, font=font) for t in [*rows, "frame"])) + 2 * gap
    col = max(w, *(int(draw.textlength(t, font=font)) + 1 for t in heads)) + gap  # no header runs into the next
    top = text_h + 2 * gap
    canvas = Image.new("RGB", (left + len(idx) * col, top + len(rows) * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, gap), "frame", fill="black", font=font)
    for j, (t, head) in enumerate(zip(idx, heads)):
        draw.text((left + j * col, gap), head, fill="gray" if t < n_obs else "black", font=font)
    for i, (name, video) in enumerate(zip(rows, videos)):
        y = top + i * (h + gap)
        draw.text((gap, y + (h - text_h) // 2), name, fill="black", font=font)
        for j, t in enumerate(idx):
            frame = np.repeat(video[t], 3, axis=-1) if c == 1 else video[t]
            canvas.paste(Image.fromarray(frame), (left + j * col, y))
    return np.asarray(canvas)


def run_demo(out, checkpoint=DEMO_CHECKPOINT, length: int = 300, n_obs: int = 10, steps: int = 10,
             scheme: str = "hierarchy-2", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Sample `length` frames from `checkpoint` given the first `n_obs` frames of a held-out video;
    write the video, a real-vs-generated side-by-side (mp4; and a labelled PNG of 12 frames, real
    above generated) and the scheme picture."""
    from fdm_engine.checkpoint import load_checkpoint
    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling
    from fdm_engine.video_io import write_image, write_video
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
    write_video(paths["side_by_side"], side_by_side(real, fake))
    write_image(paths["strip"], labelled_strip({"real": real, "generated": fake}, n_obs))
    render_png(plan(scheme, length, n_obs, summary["max_frames"]), str(paths["scheme"]),
               title=f"{scheme}: T={length}, {n_obs} given, K={summary['max_frames']}")
    return {"paths": paths, "wall_s": wall, "jobs": len(summary["jobs"]), "nfe": summary["nfe"],
            "length": length, "n_obs": n_obs, "scheme": scheme, "checkpoint": checkpoint}
