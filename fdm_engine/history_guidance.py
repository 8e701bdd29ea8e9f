"""History guidance (Song et al. 2025, "History-Guided Video Diffusion", DFoT): a wrapper under the
denoiser contract (docs/denoiser.md) that extrapolates from a prediction made with less history
towards the one made with all of it.

For each job, `drop` picks which of its observed frames (its history) the reduced prediction does
without. The network sees the job twice, in one call of 2B rows: as given (pred_full) and with the
dropped frames turned into padding (valid = False, so no real frame's output depends on them;
pred_reduced). On latent frames the wrapper returns

    pred = pred_full + W (pred_full - pred_reduced)

in the model's prediction type. The conversions between eps, x0 and v at one x_t are affine in the
prediction and the weights (1 + W, -W) sum to 1, so this is the same combination of x0 estimates
(and of eps, of v). W = 0 is the unguided model; DFoT's guidance scale is omega = 1 + W.
Observed frames keep pred_full. It is linear in the model's outputs, so it stays exact with the
oracle. Only the jobs (rows) with history to drop get the reduced prediction: a row without any
is the plain model, evaluated once.

NFE (network evaluations of single jobs, `job_nfe`): a guided call of a job with history to drop
costs 2 (the job through the network twice, as 2 rows), one without costs 1. Per-frame jobs
(docs/perframe.md) show the frames they have finished as clean history, so the count is per call.

Drops (registry `HISTORY_DROPS`, spec `name[:N]`):
- `all`: every observed frame (DFoT's vanilla history guidance: full history vs none);
- `keep-nearest:N`: all but the N observed frames nearest in time to the job's latent frames,
  so the guidance is towards what the long-range history adds.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from fdm_engine.errors import FdmError
from fdm_engine.precision import expose_model_attributes
from fdm_engine.registry import Registry

# (observed [B, F] bool, frame_indices [B, F], latent [B, F] bool, N) -> dropped [B, F] bool
Drop = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int | None], torch.Tensor]
HISTORY_DROPS: Registry = Registry("history drop", group="fdm.history_drops")


@HISTORY_DROPS.register("all")
def drop_all(observed, frame_indices, latent, n=None):
    return observed.clone()


@HISTORY_DROPS.register("keep-nearest")
def drop_all_but_nearest(observed, frame_indices, latent, n):
    # Distance of each frame to the job's nearest latent frame; the N smallest among the
    # observed are kept (ties: the earlier slot).
    idx = frame_indices.to(torch.float64)
    gap = (idx[:, :, None] - idx[:, None, :]).abs()  # [B, F, F]
    gap = torch.where(latent[:, None, :], gap, torch.full_like(gap, math.inf)).amin(dim=2)  # [B, F]
    gap = torch.where(observed, gap, torch.full_like(gap, math.inf))
    order = torch.sort(gap, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return observed & (rank >= n)


NEEDS_N = {"keep-nearest"}


def parse_drop(spec: str) -> tuple[Drop, int | None]:
    """'all' or 'keep-nearest:N' -> (drop function, N); FdmError naming --history-drop otherwise."""
    name, sep, count = str(spec).partition(":")
    if name not in HISTORY_DROPS:
        raise FdmError(f"--history-drop {spec!r}: unknown (choose from all, keep-nearest:N)")
    if name not in NEEDS_N:
        if sep:
            raise FdmError(f"--history-drop {spec!r}: {name} takes no :N")
        return HISTORY_DROPS.get(name), None
    if not count.isdigit():
        raise FdmError(f"--history-drop {spec!r}: {name} needs a frame count, e.g. {name}:2")
    return HISTORY_DROPS.get(name), int(count)


def check_weight(weight) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise FdmError(f"--history-guidance {weight!r}: must be a finite number >= 0 (0 = off)")


class HistoryGuidance(nn.Module):
    """model(x, frame_indices, noise_levels, observed, valid) guided by its full history.

    `weight` is W (0 = the model itself); `drop` a spec of HISTORY_DROPS.
    """

    def __init__(self, model: nn.Module, weight: float, drop: str = "all"):
        super().__init__()
        check_weight(weight)
        self.model = model
        self.weight = float(weight)
        self.drop, self.count = parse_drop(drop)
        self.drop_spec = str(drop)
        expose_model_attributes(self, model)

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        """x [B, F, C, H, W]; frame_indices, noise_levels, observed, valid [B, F]."""
        real = torch.ones_like(observed) if valid is None else valid
        latent = real & ~observed
        dropped = self.drop(observed & real, frame_indices, latent, self.count) & observed & real
        rows = dropped.any(dim=1)  # jobs with history to drop: only they get the reduced prediction
        if not bool(rows.any()):
            return self.model(x, frame_indices, noise_levels, observed, valid=valid)
        B = x.shape[0]
        out = self.model(torch.cat([x, x[rows]]), torch.cat([frame_indices, frame_indices[rows]]),
                         torch.cat([noise_levels, noise_levels[rows]]),
                         torch.cat([observed, (observed & ~dropped)[rows]]),
                         valid=torch.cat([real, (real & ~dropped)[rows]]))
        full, reduced = out[:B], out[B:]
        guided = full[rows] + self.weight * (full[rows] - reduced)
        out = full.clone()
        out[rows] = torch.where(latent[rows][:, :, None, None, None], guided, full[rows])
        return out


def with_history_guidance(model: nn.Module, weight: float, drop: str = "all") -> nn.Module:
    """`model` under history guidance of weight W; the model itself when W = 0."""
    check_weight(weight)
    return model if weight == 0 else HistoryGuidance(model, weight, drop)


def history_slots(job, steps: int) -> torch.Tensor:
    """[calls, F] bool: the slots (observed, then latent) each network call of `job` shows the model
    as clean, i.e. its history: the observed frames, and a per-frame job's frames already at level 0.
    `steps`: the sampler's moves per job (an FDM job's calls)."""
    n_o, n_l = len(job.observed), len(job.latent)
    if job.schedule is None:
        done = torch.zeros(steps, n_l, dtype=torch.bool)
    else:
        done = torch.tensor(job.schedule[:-1], dtype=torch.long).reshape(-1, n_l) == 0
    return torch.cat([torch.ones(done.shape[0], n_o, dtype=torch.bool), done], 1)


def job_nfe(job, steps: int, drop: str | None = None) -> int:
    """Network evaluations of one job: its calls (an FDM job: `steps`, the sampler's moves; a
    per-frame job: its schedule's), each counting 2 under history guidance (`drop`: its
    --history-drop; None: unguided) when it has history to drop (the full and the reduced
    prediction), else 1."""
    if drop is None:
        return steps if job.calls is None else job.calls
    fn, count = parse_drop(drop)
    clean = history_slots(job, steps)
    frames = torch.tensor(job.observed + job.latent, dtype=torch.long).expand_as(clean)
    dropped = fn(clean, frames, ~clean, count) & clean
    return clean.shape[0] + int(dropped.any(dim=1).sum())


def plan_nfe(plan, steps: int, drop: str | None = None) -> int:
    """Network evaluations of a plan's single jobs (Plan.nfe, with history guidance counted)."""
    return sum(job_nfe(job, steps, drop) for job in plan.jobs)


def guidance_drop(model) -> str | None:
    """The --history-drop of a history-guided model, also under other wrappers (what job_nfe
    needs); None when unguided."""
    for _ in range(16):  # every wrapper here keeps what it wraps as .model
        if model is None or isinstance(model, HistoryGuidance):
            break
        model = getattr(model, "model", None)
    return model.drop_spec if isinstance(model, HistoryGuidance) else None
