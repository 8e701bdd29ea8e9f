"""Pictures of a per-frame plan: a row per network call, a column per frame, coloured by noise level
(docs/perframe.md). Rounds run in order, the jobs of a round side by side, so row k shows every
frame's level after the k-th batched call.
"""

from __future__ import annotations

from sampling_schemes.plan import Plan

NOT_STARTED = -1
# not started, clean, then noise levels in ten bands from slightly noisy (1) to pure noise (9)
GLYPHS = " _123456789"


def level_grid(plan: Plan, steps: int) -> list[list[int]]:
    """[calls][T] levels after each batched call (NOT_STARTED before a frame's first job)."""
    level = [0 if f < plan.n_obs else NOT_STARTED for f in range(plan.length)]
    rows = []
    for round_jobs in plan.rounds():
        height = max(steps if j.calls is None else j.calls for j in round_jobs)
        for k in range(1, height + 1):
            for job in round_jobs:
                if job.schedule is None:  # an FDM job: all its frames from N to 0 together
                    for f in job.latent:
                        level[f] = max(steps - k, 0)
                else:
                    row = job.schedule[min(k, len(job.schedule) - 1)]
                    for f, v in zip(job.latent, row):
                        level[f] = v
            rows.append(list(level))
    return rows


def glyph(level: int, steps: int) -> str:
    if level == NOT_STARTED:
        return "."
    if level == 0:
        return GLYPHS[1]
    return GLYPHS[1 + max(1, -(-9 * level // steps))]


def render_levels_text(plan: Plan, steps: int, width: int = 80) -> str:
    """One line per batched call; when T exceeds the width a column shows its bucket's noisiest frame."""
    grid = level_grid(plan, steps)
    label = len(str(len(grid)))
    cols = max(1, min(plan.length, width - label - 3))
    per = plan.length / cols
    lines = []
    for k, row in enumerate(grid):
        cells = [row[int(c * per):max(int((c + 1) * per), int(c * per) + 1)] for c in range(cols)]
        text = "".join(glyph(max(cell, key=lambda v: steps + 1 if v == NOT_STARTED else v), steps) for cell in cells)
        lines.append(f"{k:>{label}} |{text}")
    scale = "" if per == 1 else f"   (1 column = {per:.3g} frames)"
    legend = f". not started   _ clean   1..9 noise level (9: pure noise, N = {steps})" + scale
    return "\n".join(lines + [legend])


def render_levels_png(plan: Plan, steps: int, path: str, title: str = "") -> None:
    """Write the picture with matplotlib's Agg canvas: levels 0..N on a colour scale, not started grey."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.array(level_grid(plan, steps) or [[NOT_STARTED] * plan.length], dtype=float)
    masked = np.ma.masked_where(grid == NOT_STARTED, grid)
    fig = Figure(figsize=(min(4 + plan.length / 40, 24), min(2 + len(grid) * 0.05, 40)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("#dddddd")
    image = ax.imshow(masked, cmap="magma_r", vmin=0, vmax=steps, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="noise level (0 clean; grey: not started)")
    ax.set_xlabel("frame index")
    ax.set_ylabel("network call")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
