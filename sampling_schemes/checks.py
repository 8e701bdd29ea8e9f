"""Argument checks (user mistakes -> FdmError naming the flag) and plan invariant checks."""

from __future__ import annotations

from typing import Iterable

from fdm_common.errors import FdmError, short_list
from sampling_schemes.job import Job


def check_args(length: int, n_obs: int, max_frames: int, step_size: int | None) -> int:
    """Validate planner inputs; returns the step size (default max_frames // 2)."""
    if length < 1:
        raise FdmError(f"--length must be >= 1 (got {length})")
    if n_obs < 0:
        raise FdmError(f"--n-obs must be >= 0 (got {n_obs})")
    if n_obs >= length:
        raise FdmError(f"--n-obs must be < --length (got {n_obs} >= {length})")
    if max_frames < 2:
        raise FdmError(f"--max-frames must be >= 2 (got {max_frames})")
    if step_size is None:
        step_size = max_frames // 2
    if step_size < 1:
        raise FdmError(f"--step-size must be >= 1 (got {step_size})")
    if step_size >= max_frames:
        raise FdmError(f"--step-size must be < --max-frames (got {step_size} >= {max_frames})")
    return step_size


def plan_problems(jobs: Iterable[Job], length: int, n_obs: int, max_frames: int) -> list[str]:
    """Every way `jobs` breaks the plan invariants (empty when the plan is valid).

    Invariants: indices in [0, T), sorted and without duplicates; observed and latent disjoint;
    |observed| + |latent| <= K; every observed frame done before its job; every latent frame undone
    before its job; at the end every frame in [0, T) done. Per-frame jobs (docs/perframe.md): a
    frame's first row is its level when the job starts, levels never rise, and "done" is level 0.
    """
    done = set(range(n_obs))
    levels: dict[int, int] = {}  # frames a per-frame job left between noise and clean
    problems = []
    for k, job in enumerate(jobs):
        where = f"job {k}"
        for name, idx in (("observed", job.observed), ("latent", job.latent)):
            if list(idx) != sorted(set(idx)):
                problems.append(f"{where}: {name} frames not sorted/unique {short_list(idx)}")
            if idx and (idx[0] < 0 or idx[-1] >= length):
                problems.append(f"{where}: {name} frames outside [0, {length})")
        if not job.latent:
            problems.append(f"{where}: no latent frames")
        if len(job.observed) + len(job.latent) > max_frames:
            problems.append(f"{where}: {len(job.observed) + len(job.latent)} frames > K={max_frames}")
        if set(job.observed) - done:
            problems.append(f"{where}: observes frames not yet done {short_list(sorted(set(job.observed) - done))}")
        if set(job.latent) & done:
            problems.append(f"{where}: regenerates done frames {short_list(sorted(set(job.latent) & done))}")
        if job.per_frame:
            problems += _level_problems(job, where, levels, done)
        else:
            if set(job.latent) & set(levels):
                problems.append(f"{where}: restarts frames left noisy {short_list(sorted(set(job.latent) & set(levels)))}")
            done |= set(job.latent)
    missing = sorted(set(range(length)) - done)
    if missing:
        problems.append(f"frames never generated: {short_list(missing)}")
    return problems


def _level_problems(job: Job, where: str, levels: dict[int, int], done: set[int]) -> list[str]:
    """Check one per-frame job's schedule against the frames' current levels, then apply it."""
    grid, rows = job.grid, job.schedule
    if not isinstance(grid, int) or grid < 1:
        return [f"{where}: a per-frame job needs a grid of >= 1 levels (got {grid!r})"]
    if len(rows) < 2 or any(len(r) != len(job.latent) for r in rows):
        return [f"{where}: its schedule needs >= 2 rows of {len(job.latent)} levels"]
    problems = []
    for i, f in enumerate(job.latent):
        column = [r[i] for r in rows]
        now = levels.get(f, grid)
        if f in done:
            continue  # reported as "regenerates done frames"
        if column[0] != now:
            problems.append(f"{where}: frame {f} starts at level {column[0]} but is at {now}")
        if any(b > a for a, b in zip(column, column[1:])) or min(column) < 0 or max(column) > grid:
            problems.append(f"{where}: frame {f}'s levels rise or leave [0, {grid}]: {short_list(column)}")
        if column[-1] == 0:
            done.add(f)
            levels.pop(f, None)
        else:
            levels[f] = column[-1]
    return problems
