"""Exact scores for per-frame-level plans and context noise (docs/perframe.md, docs/oracle.md).

With the oracle a per-frame job is still affine in its inputs, now including the values of frames
an earlier job left part-way and the multistep history they bring (`Sampler.carried`):

    [x_L'; h'] = gain @ [x_O; x_L; h] + offset + noise @ w,   w: the job's fresh step and context noise

where x_L are the latent frames' values when the job starts (fresh N(0, I) noise for frames at level
N), h the history values its frames bring and h' those it leaves. The map is measured by running
the real `run_job` on basis inputs (as `sampler_map`). One pixel's current values of all T frames,
with the history values of the frames in progress, are Gaussian; `propagate_levels` follows them job
by job (every value is replaced when a job moves it), and at the end every frame is clean.
The chain rule for log det used by FDM plans does not hold when values are replaced, so the
covariance is carried as a square root, cov = M M^T (M: every value as a linear map of the given
frames and every noise input so far, compressed by QR to as many columns as rows), and log det
comes from the frames' rows of M. A guided chain whose variance grows geometrically along the video
(df-autoregressive under history guidance, variance ratio ~1e14 at T = 300) makes cov itself
numerically singular (its correlation matrix's smallest eigenvalue falls below float64's epsilon),
while M, with the square root of cov's condition number, still resolves it: the KL stays finite.

FDM jobs with context noise keep `gaussian.propagate` (their latents start from fresh noise, so the
chain rule holds): `ContextConditional` puts the start noise and the context noise in `noise`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from fdm_engine.evaluation.gaussian import Joint, JobMap, relative_key
from fdm_engine.executor import batch_levels
from fdm_engine.samplers import Sampler, run_job
from fdm_engine.samplers.history import FrameState
from sampling_schemes import Job, Plan


@dataclasses.dataclass(frozen=True)
class LevelMap:
    """One job's affine map, measured. Rows: the latent frames' end values [L], then the history
    values it leaves (`left`: (latent slot, name) per row). Columns of `gain`: observed values [O],
    latent start values [L], then the carried history values (the order `carry` gave them)."""

    gain: torch.Tensor  # [L + H_out, O + L + H_in]
    noise: torch.Tensor  # [L + H_out, W] on the job's fresh step and context noise
    offset: torch.Tensor  # [L + H_out]
    left: tuple[tuple[int, str], ...] = ()
    meta: dict = dataclasses.field(default_factory=dict)  # latent slot -> FrameState (meta only) left

    def split(self, n_o: int) -> tuple[torch.Tensor, ...]:
        """(A_O, A_L, R, b) of the frames (a job that carries no history)."""
        n_l = len(self.offset) - len(self.left)
        return self.gain[:n_l, :n_o], self.gain[:n_l, n_o:n_o + n_l], self.noise[:n_l], self.offset[:n_l]


def measured_map(oracle, sampler: Sampler, job: Job, context_level: float | None,
                 carry: dict[int, FrameState] | None = None) -> LevelMap:
    """One job's map, measured by running it on basis inputs. carry: latent slot -> the sampler
    state (meta; its values' names) its frame brings from an earlier job; each value is an input."""
    n_o, n_l = len(job.observed), len(job.latent)
    carry = carry or {}
    carried = [(i, name) for i in sorted(carry) for name in sorted(carry[i].values)]
    n_h = len(carried)
    calls = sampler.nfe if job.calls is None else job.calls
    n_step = calls * n_l if sampler.stochastic else 0
    n_ctx = n_o if context_level is not None else 0
    width = n_o + n_l + n_h + n_step + n_ctx + 1  # the last column is all-zero input: it measures b
    shape = (1, n_o + n_l, 1, 1, width)
    eye = torch.eye

    def basis(rows: slice, first: int, n: int) -> torch.Tensor:
        z = torch.zeros(shape, dtype=torch.float64)
        z[0, rows, 0, 0, first:first + n] = eye(n, dtype=torch.float64)
        return z

    x_obs, start = basis(slice(0, n_o), 0, n_o), basis(slice(n_o, None), n_o, n_l)
    first_step = n_o + n_l + n_h
    ctx = basis(slice(0, n_o), first_step + n_step, n_ctx) if context_level is not None else None
    state = None
    if carried:
        slots = []
        for i in sorted(carry):
            values = {}
            for name in carry[i].values:
                v = torch.zeros(1, 1, width, dtype=torch.float64)
                v[0, 0, n_o + n_l + carried.index((i, name))] = 1.0
                values[name] = v
            slots.append((0, n_o + i, FrameState(values, carry[i].meta)))
        state = FrameState.gather(slots, 1, n_o + n_l)
    frames = torch.tensor([list(job.observed) + list(job.latent)], dtype=torch.long)
    mask = torch.tensor([[True] * n_o + [False] * n_l])
    out = run_job(oracle, sampler, start, frames, mask, x_obs, levels=batch_levels([job], n_o + n_l, sampler),
                  step_noise=lambda i: basis(slice(n_o, None), first_step + i * n_l, n_l),
                  context_level=context_level, context_noise=ctx, carry=state)
    rows = [out[0, n_o:, 0, 0].to(torch.float64)]
    left, meta = [], {}
    after = sampler.carried() if job.per_frame else None
    if after is not None:
        for i, e in enumerate(job.end):
            if e == 0:
                continue
            slot = after.slot(0, n_o + i)
            meta[i] = FrameState({}, slot.meta)
            for name in sorted(slot.values):
                left.append((i, name))
                rows.append(slot.values[name].reshape(1, width).to(torch.float64))
    cols = torch.cat(rows)
    b = cols[:, -1]
    a = cols[:, :-1] - b[:, None]
    return LevelMap(a[:, :first_step], a[:, first_step:], b, tuple(left), meta)


class ContextConditional:
    """JobMapper for FDM jobs run by a real sampler with context noise (start noise is fresh)."""

    def __init__(self, oracle, sampler: Sampler, context_level: float):
        self.oracle, self.sampler, self.context_level = oracle, sampler, context_level
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            a_o, a_l, r, b = measured_map(self.oracle, self.sampler, Job.make(*key), self.context_level).split(len(key[0]))
            self._cache[key] = JobMap(gain=a_o, noise=torch.cat([a_l, r], 1), offset=b)
        return self._cache[key]


class ExactContext:
    """The ideal FDM job when observed frames are seen noised: x_L from the exact conditional given
    z_O = a x_O + s e (gain on x_O, noise on e and the conditional's own)."""

    def __init__(self, oracle, context_level: float):
        self.oracle = oracle
        a, s = oracle.schedule.alpha_sigma(torch.tensor(float(context_level), dtype=torch.float64))
        self.a, self.s = float(a), float(s)
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            o, lat = key
            sigma = self.oracle.covariance(torch.tensor(o + lat))
            n_o = len(o)
            s_oo = self.a**2 * sigma[:n_o, :n_o] + self.s**2 * torch.eye(n_o, dtype=torch.float64)
            s_lo = self.a * sigma[n_o:, :n_o]
            k = torch.linalg.solve(s_oo, s_lo.T).T if n_o else torch.zeros(len(lat), 0, dtype=torch.float64)
            p = sigma[n_o:, n_o:] - k @ s_lo.T
            evals, evecs = torch.linalg.eigh((p + p.T) / 2)
            self._cache[key] = JobMap(gain=self.a * k, noise=torch.cat([self.s * k, evecs * evals.clamp(min=0).sqrt()], 1),
                                      offset=torch.zeros(len(lat), dtype=torch.float64))
        return self._cache[key]


def level_key(job: Job) -> tuple:
    return relative_key(job.observed, job.latent), job.schedule, job.grid


def meta_key(carry: dict[int, FrameState]) -> tuple:
    """What a job's map depends on in the history its frames bring: per slot, the names and the
    (plan-fixed) meta values."""
    return tuple((i, tuple(sorted(carry[i].values)),
                  tuple((k, tuple(v.reshape(-1).tolist())) for k, v in sorted(carry[i].meta.items())))
                 for i in sorted(carry))


def propagate_levels(plan: Plan, sigma: torch.Tensor, oracle, sampler: Sampler,
                     context_level: float | None = None) -> Joint:
    """The joint of one pixel's clean video made by a per-frame plan run by `sampler` with the oracle.

    The Gaussian variables are the T frames' current values and, for frames left part-way, the
    multistep sampler's history values they carry to their next job (affine in the same inputs):
    rows T.. of the square root, taken from a pool as frames leave history and given back when
    their next job replaces it."""
    T, n = plan.length, plan.n_obs
    mean = torch.zeros(T, dtype=torch.float64)
    root = torch.zeros(T, n, dtype=torch.float64)  # cov = root @ root.T; a column per noise input
    root[:n] = torch.linalg.cholesky(sigma[:n, :n])
    started = torch.zeros(T, dtype=torch.bool)
    started[:n] = True
    history: dict[int, tuple[FrameState, list[int]]] = {}  # frame -> (its state's meta and names, rows)
    free: list[int] = []
    cache: dict[tuple, LevelMap] = {}
    for job in plan.jobs:
        brought = {i: history[f][0] for i, f in enumerate(job.latent) if f in history}
        key = (level_key(job), meta_key(brought))
        if key not in cache:
            rel = Job(*key[0][0], 0, job.schedule, job.grid)
            cache[key] = measured_map(oracle, sampler, rel, context_level, brought)
        m = cache[key]
        lat = torch.tensor(job.latent, dtype=torch.long)
        fresh = lat[~started[lat]]
        # start noise: N(0, 1), independent of everything (a new column each; the row was zero)
        start = torch.zeros(len(mean), len(fresh), dtype=torch.float64)
        start[fresh, torch.arange(len(fresh))] = 1.0
        mean[fresh] = 0.0
        started[fresh] = True
        root = torch.cat([root, start], 1)
        old = [r for i in sorted(brought) for r in history[job.latent[i]][1]]
        inputs = torch.tensor(job.observed + job.latent + tuple(old), dtype=torch.long)
        # rows for the history it leaves (allocated before any is written: inputs stay as they were)
        need = len(m.left) - len(free)
        if need > 0:
            free += range(len(mean), len(mean) + need)
            mean = torch.cat([mean, torch.zeros(need, dtype=torch.float64)])
            root = torch.cat([root, torch.zeros(need, root.shape[1], dtype=torch.float64)])
        new, free = free[:len(m.left)], free[len(m.left):]
        outputs = torch.tensor(job.latent + tuple(new), dtype=torch.long)
        mean[outputs] = m.gain @ mean[inputs] + m.offset
        moved = m.gain @ root[inputs]  # [L + H, columns], against the values before this job
        root = torch.cat([root, torch.zeros(len(mean), m.noise.shape[1], dtype=torch.float64)], 1)
        root[outputs] = torch.cat([moved, m.noise], 1)
        for i in sorted(brought):  # the history it replaced: rows back to the pool
            rows = history.pop(job.latent[i])[1]
            root[rows], mean[rows] = 0.0, 0.0
            free += rows
        for i, state in m.meta.items():
            names = sorted({name for j, name in m.left if j == i})
            rows = [r for (j, _), r in zip(m.left, new) if j == i]
            history[job.latent[i]] = (FrameState({name: torch.empty(0) for name in names}, state.meta), rows)
        if root.shape[1] > 2 * len(mean):  # back to as many columns as rows (root @ root.T unchanged), now and then
            root = torch.linalg.qr(root.T, mode="r").R.T
    root = root[:T]  # every frame is clean: no history is left
    tri = torch.linalg.qr(root.T, mode="r").R  # [T, T]: cov = tri.T @ tri
    diag = torch.diagonal(tri).abs()
    logdet = float("-inf") if root.shape[1] < T or bool((diag == 0).any()) else 2.0 * float(torch.log(diag).sum())
    return Joint(mean[:T], root @ root.T, logdet)
