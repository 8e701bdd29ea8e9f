"""Pictures of a plan: a row per job, a column per frame (the FDM paper's scheme figure).

Each cell is one of four states, from the point of view of that row's job:
not generated yet, done (given or generated earlier), observed now, generated now.
"""

from __future__ import annotations

from sampling_schemes.plan import Plan

STATES = ("not yet generated", "done", "observed now", "generated now")
COLOURS = ("#f2f2f2", "#9ecae1", "#08519c", "#e6550d")
GLYPHS = ("·", "░", "o", "█")
ASCII_GLYPHS = (".", ":", "o", "#")  # for terminals that cannot print the ones above


def state_grid(plan: Plan) -> list[list[int]]:
    """[n_jobs][T] state codes (indices into STATES)."""
    done = set(range(plan.n_obs))
    grid = []
    for job in plan.jobs:
        row = [1 if f in done else 0 for f in range(plan.length)]
        for f in job.observed:
            row[f] = 2
        for f in job.latent:
            row[f] = 3
        grid.append(row)
        done |= set(job.latent)
    return grid


def render_text(plan: Plan, width: int = 80, glyphs: tuple[str, ...] = GLYPHS) -> str:
    """One line per job; when T exceeds the width, each column shows the strongest state of a
    bucket of frames (generated > observed > done > not yet), so no job's frames vanish."""
    label = len(str(len(plan)))
    cols = max(1, min(plan.length, width - label - 3))
    per = plan.length / cols
    bar = "│" if glyphs == GLYPHS else "|"
    lines = []
    for k, row in enumerate(state_grid(plan)):
        cells = [max(row[int(c * per):max(int((c + 1) * per), int(c * per) + 1)]) for c in range(cols)]
        lines.append(f"{k:>{label}} {bar}" + "".join(glyphs[s] for s in cells))
    legend = "   ".join(f"{g} {s}" for g, s in zip(glyphs, STATES))
    scale = "" if per == 1 else f"   (1 column = {per:.3g} frames)"
    return "\n".join(lines + [legend + scale])


def render_png(plan: Plan, path: str, title: str = "") -> None:
    """Write the picture to `path` with matplotlib's Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    grid = state_grid(plan)
    n_jobs = max(len(grid), 1)
    width = min(4 + plan.length / 40, 24)
    fig = Figure(figsize=(width, min(2 + n_jobs * 0.18, 40)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(grid or [[0] * plan.length], cmap=ListedColormap(COLOURS), vmin=-0.5, vmax=3.5,
              aspect="auto", interpolation="nearest")
    ax.set_xlabel("frame index")
    ax.set_ylabel("job")
    ax.set_title(title)
    handles = [Patch(facecolor=c, edgecolor="#555555", label=s) for c, s in zip(COLOURS, STATES)]
    # Below the frame axis; two columns when the figure is too narrow for four (short videos).
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4 if width >= 8 else 2,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")  # tight: the legend below the axes is not cut off
