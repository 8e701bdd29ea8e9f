"""Each trainer's tiny model overfits a single clip: the loss falls by a large factor.

The dataset is one 6-frame video at 8 px, so every batch holds the same clip (windows cannot
move); the tiny presets run at 8 px with 6 frames to fit the CPU budget (~10 s per model).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdm_engine.datasets import make_dataset
from trainers import TrainConfig, train

STEPS = 100


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_clip") / "balls"
    make_dataset("bouncing-balls", root, num_videos=1, num_test=1, length=6, size=8, seed=0)
    return root


def overfit(model: str, data, run_dir, **extra) -> list[float]:
    frames = {"max_frames": 6} if model == "fdm" else {}
    cfg = TrainConfig(dataset="bouncing-balls", data_dir=str(data), model=model, preset="tiny", run_dir=str(run_dir),
                      steps=STEPS, batch_size=2, lr=2e-3, warmup_steps=10, clip_length=6, log_every=1,
                      save_every=STEPS, sample_every=0, model_config={"image_size": 8, **frames}, **extra)
    train(cfg, progress=False, log=lambda message: None)
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model,extra", [
    pytest.param("fdm", {}, marks=pytest.mark.slow),  # ~16 s each
    pytest.param("vdm", {}, marks=pytest.mark.slow),
    pytest.param("ramvid", {"max_num_mask_frames": 2}, marks=pytest.mark.slow),
    pytest.param("ssm", {}, marks=pytest.mark.slow),
], ids=["fdm", "vdm", "ramvid", "ssm"])
def test_tiny_model_overfits_one_clip(model, extra, one_clip, tmp_path):
    losses = overfit(model, one_clip, tmp_path / model, **extra)
    assert len(losses) == STEPS and all(np.isfinite(losses))
    start, end = np.mean(losses[:10]), np.mean(losses[-20:])
    assert end < start / 4, f"{model}: loss {start:.3f} -> {end:.3f}"
