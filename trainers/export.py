"""`fdm demo export`: a training run's newest EMA weights as one self-describing checkpoint.

It reads a run folder as `fdm train` writes it (trainers/checkpoints.py, metrics.jsonl), so it lives
with the trainers; the demo itself (fdm_engine/demo.py) only samples from the exported file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fdm_engine.errors import FdmError
from trainers.checkpoints import list_checkpoints, state_path


def export_checkpoint(run_dir, dst, step: int | None = None) -> Path:
    """The EMA weights of a training run's checkpoint at `step` (default: the newest) -> `dst`
    (model only), with the run's training config, the data generator's manifest, steps, wall time
    and final loss as metadata."""
    import torch

    from fdm_engine.checkpoint import load_checkpoint, save_checkpoint
    from fdm_engine.datasets.procedural.make import read_manifest

    run_dir = Path(run_dir)
    found = list_checkpoints(run_dir)
    if not found:
        raise FdmError(f"{run_dir}: holds no training checkpoint (checkpoints/step_*.safetensors)")
    if step is not None:
        found = [(s, p) for s, p in found if s == step]
        if not found:
            raise FdmError(f"{run_dir}: has no checkpoint of step {step}")
    step, path = found[-1]
    loaded = load_checkpoint(path, use_ema=True)
    if not loaded.used_ema:
        raise FdmError(f"{path}: holds no EMA weights")
    train_config = json.loads((run_dir / "config.json").read_text())
    manifest = read_manifest(Path(loaded.extra.get("data_dir") or train_config.get("data_dir") or ""))
    if manifest is None:
        raise FdmError(f"{run_dir}: the run's data folder has no dataset.json (made by `fdm data make`)")
    companion = torch.load(state_path(path), map_location="cpu", weights_only=True)
    extra = {"step": step, "dataset": loaded.extra.get("dataset"), "train_config": train_config,
             "data": manifest, "train_wall_s": float(companion.get("elapsed_s", 0.0)),
             "final_loss": final_loss(run_dir / "metrics.jsonl", step)}
    return save_checkpoint(dst, loaded.model, loaded.diffusion, extra=extra)


def final_loss(metrics: Path, step: int, window: int = 500) -> float | None:
    """Mean training loss over the last `window` steps up to `step` (metrics.jsonl records)."""
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r and step - window < r.get("step", -1) <= step]
    return float(np.mean(losses)) if losses else None
