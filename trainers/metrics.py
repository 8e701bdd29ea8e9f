"""Training metrics: one JSON object per line (RUN_DIR/metrics.jsonl) and a loss-curve PNG.

Each record has `step` (optimiser steps done), `loss` (mean training loss since the previous
record), `lr`, `grad_norm`, `steps_per_s`, `samples_per_s` and `time` (seconds since the run
started, resumptions included). On resume the records after the checkpoint's step are dropped,
since the resumed run recomputes them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from fdm_engine.files import atomic_write


class MetricsLog:
    def __init__(self, path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def read(self) -> list[dict]:
        """Every complete record (a line cut by a kill is skipped)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Keep the records of steps <= `step` (atomically)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        with atomic_write(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def plot_losses(records: list[dict], path) -> Path | None:
    """Loss against step (log scale) with a running mean, as a PNG; None without finite losses."""
    points = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"]) and r["loss"] > 0]
    if not points:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    steps, losses = zip(*points)
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
    ax.plot(steps, smooth, lw=1.5, label=f"running mean ({window})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
