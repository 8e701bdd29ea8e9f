"""Training metrics: the loss-curve PNG of RUN_DIR/metrics.jsonl. The log itself (records and
their fields) is fdm_engine.metrics_log.MetricsLog, which `fdm report` reads too."""

from __future__ import annotations

import math
from pathlib import Path

from fdm_engine.files import atomic_write


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
