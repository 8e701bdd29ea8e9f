"""Exact scheme score: KL(scheme's joint || true GP joint) for one pixel's T frames (docs/oracle.md).

    score = score_scheme("hierarchy-2", length=300, n_obs=36, max_frames=20, oracle=oracle)
    score.kl, score.variance_ratio [T], score.cov_error [T] (by frame distance), score.to_dict()

By default each job draws its latent frames from the exact conditional, so what is scored is the
scheme alone. Pass `sampler=` to score the scheme run with that real sampler (its maps measured by
`sampler_map`), i.e. exactly what `fdm sample` with the oracle produces. `denoiser=` is what that
sampler runs instead of the bare oracle (a wrapper of it that stays linear, such as history
guidance: fdm_engine/history_guidance.py); the truth is still the oracle's GP.

Adaptive schemes choose observed frames from the pixels of the video, so their output is neither
Gaussian nor independent across pixels: they have no exact score. `monte_carlo_scheme` samples any
scheme through the real Executor; for adaptive ones its KL is that of the Gaussian with the sample
covariance, a lower bound on the true KL.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable

import torch

from fdm_engine.errors import FdmError
from fdm_engine.evaluation.gaussian import (ExactConditional, JobMapper, cholesky_or_fail, error_by_distance,
                                            gaussian_kl, propagate, variance_ratio)
from fdm_engine.evaluation.levels_map import ContextConditional, ExactContext, propagate_levels
from fdm_engine.evaluation.montecarlo import KLEstimate, kl_estimate, pixel_series
from fdm_engine.evaluation.sampler_map import SamplerConditional
from fdm_engine.history_guidance import guidance_drop, plan_nfe
from fdm_engine.limits import check_memory
from fdm_engine.samplers import Sampler
from sampling_schemes import check_args, get_scheme, job_source
from sampling_schemes.levels import LevelOptions
from sampling_schemes.registry import SCHEMES


@dataclasses.dataclass(frozen=True)
class SchemeScore:
    scheme: str
    length: int
    n_obs: int
    max_frames: int
    step_size: int
    jobs: int
    sampler: str  # "exact" (ideal conditional) or a sampler description
    kl: float  # nats, one pixel's T frames
    variance_ratio: list[float]  # [T] scheme / true marginal variance per frame
    cov_error: list[float]  # [T] mean signed (C - Sigma) / prior variance at frame distance d
    cov_abs_error: list[float]  # [T] mean absolute, same pairs
    nfe: int | None = None  # network evaluations of single jobs (None with the exact conditional); a
    # history-guided call with history to drop counts 2 (fdm_engine/history_guidance.py: job_nfe)
    rounds: int | None = None  # DAG rounds (batched calls: `calls`)
    calls: int | None = None  # batched network calls, each round's longest job
    context_noise: float | None = None

    @property
    def kl_per_frame(self) -> float:
        return self.kl / (self.length - self.n_obs)

    def summary(self) -> dict:
        """Scalars only (for tables)."""
        vr = torch.tensor(self.variance_ratio[self.n_obs:])
        return {"scheme": self.scheme, "jobs": self.jobs, "kl": self.kl, "kl_per_frame": self.kl_per_frame,
                "variance_ratio_min": float(vr.min()), "variance_ratio_max": float(vr.max()),
                "cov_abs_error_mean": float(torch.tensor(self.cov_abs_error).mean()), "nfe": self.nfe,
                "rounds": self.rounds, "calls": self.calls, "context_noise": self.context_noise}

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), **self.summary()}


def describe(sampler: Sampler | None) -> str:
    if sampler is None:
        return "exact"
    c = sampler.config
    eta = f", eta {c.eta}" if getattr(sampler, "stochastic", False) and c.eta else ""
    return f"{type(sampler).__name__}({len(sampler.timesteps)} steps, {c.spacing}{eta})"


def mapper_for(oracle, sampler: Sampler | None, context_noise: float | None = None) -> JobMapper:
    if context_noise is not None:
        return ExactContext(oracle, context_noise) if sampler is None else ContextConditional(oracle, sampler,
                                                                                              context_noise)
    return ExactConditional(oracle) if sampler is None else SamplerConditional(oracle, sampler)


def level_options(sampler: Sampler | None, options: LevelOptions | None) -> LevelOptions:
    """Per-frame schemes plan on the sampler's own grid: steps = its moves per job."""
    options = options or LevelOptions()
    if sampler is not None:
        options = dataclasses.replace(options, steps=sampler.nfe)
    return options


def static_plan(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None,
                options: LevelOptions | None = None):
    fixed = job_source(scheme, length, n_obs, max_frames, step_size, options=options).fixed_plan
    if fixed is None:
        raise FdmError(f"{scheme} picks observed frames from each video's pixels at run time, so its output "
                       f"is not Gaussian and has no exact score: use --monte-carlo N")
    return fixed


def score_scheme(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
                 oracle, sampler: Sampler | None = None, options: LevelOptions | None = None,
                 context_noise: float | None = None, denoiser=None) -> SchemeScore:
    """Exact KL and per-frame / per-distance covariance errors of a static scheme with the oracle.

    Per-frame schemes (docs/perframe.md) need a real sampler (their partial jobs have no "exact
    conditional"); they plan on its grid. `context_noise` shows observed frames at that timestep.
    `denoiser`: what the sampler runs instead of the oracle (a linear wrapper of it)."""
    check_covariances(length)
    if get_scheme(scheme).per_frame and sampler is None:
        raise FdmError(f"{scheme} moves frames part-way between jobs: score it with a real --sampler "
                       "(e.g. dpm++2m), whose grid it plans on")
    options = level_options(sampler, options)
    p = static_plan(scheme, length, n_obs, max_frames, step_size, options)
    if context_noise is not None and sampler is not None:
        from fdm_engine.executor import check_context_noise

        check_context_noise(context_noise, sampler)
    sigma = oracle.covariance(torch.arange(length))  # [T, T]
    chol = cholesky_or_fail(sigma, f"the true {length}-frame covariance of {oracle.config.kernel}")
    if denoiser is not None and sampler is None:
        raise FdmError("a guided denoiser needs a real sampler (the exact conditional runs no denoiser): pass --sampler")
    model = oracle if denoiser is None else denoiser
    if p.per_frame:
        joint = propagate_levels(p, sigma, model, sampler, context_noise)
    else:
        joint = propagate(p, sigma, mapper_for(model, sampler, context_noise))
    kl = gaussian_kl(joint.mean, joint.cov, sigma, joint.logdet, chol_sigma=chol)
    signed, absolute = error_by_distance(joint.cov, sigma, n_obs)
    steps = None if sampler is None else sampler.nfe
    return SchemeScore(scheme, length, n_obs, max_frames, check_args(length, n_obs, max_frames, step_size), len(p),
                       describe(sampler), kl, variance_ratio(joint.cov, sigma).tolist(), signed.tolist(),
                       absolute.tolist(), None if steps is None else plan_nfe(p, steps, guidance_drop(denoiser)),
                       p.depth, None if steps is None else p.calls(steps), context_noise)


def scheme_nfe(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None, sampler: Sampler,
               options: LevelOptions | None = None, drop: str | None = None) -> int:
    """NFE of a static scheme run by `sampler` (history guidance with `drop`: its calls with history
    to drop count 2); per-frame schemes plan on the sampler's grid."""
    p = static_plan(scheme, length, n_obs, max_frames, step_size, level_options(sampler, options))
    return plan_nfe(p, sampler.nfe, drop)


def steps_for_nfe(budget: int, nfe_at: Callable[[int], int], guess: int = 1) -> tuple[int, int]:
    """(steps, NFE at those steps) with the NFE nearest `budget` (a tie: the fewer steps), for a
    scheme whose NFE `nfe_at(steps)` grows with its steps (every frame gets each step, so
    nfe_at(k) >= k and k never passes the budget)."""
    if budget < 1:
        raise FdmError(f"--nfe {budget}: must be >= 1")
    cost = functools.cache(nfe_at)
    hi = max(1, min(budget, guess))
    while cost(hi) < budget and hi < budget:
        hi = min(budget, 2 * hi)
    lo = 1
    while lo < hi:  # the fewest steps reaching the budget
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if cost(mid) < budget else (lo, mid)
    best = min((k for k in (hi - 1, hi) if k >= 1), key=lambda k: (abs(cost(k) - budget), k))
    return best, cost(best)


def check_covariances(length: int) -> None:
    """The exact scores hold a few T x T float64 matrices at once (the covariance, its Cholesky
    factor, the scheme's joint and the solves of the KL): refuse a --length they cannot fit."""
    check_memory(6 * 8 * length**2, f"--length {length}: the exact {length}x{length} covariances",
                 "lower --length")


def static_schemes(levels=(2, 3, 4), per_frame: bool = False) -> list[str]:
    """Every registered static scheme, families ("hierarchy-N") expanded for the given N; the
    per-frame ones (which need a real sampler) only with `per_frame`."""
    names = []
    for name in SCHEMES.names():
        if re.search(r"(^|-)N(-|$)", name):
            candidates = [re.sub(r"(^|-)N(?=-|$)", rf"\g<1>{n}", name, count=1) for n in levels]
        else:
            candidates = [name]
        names += [c for c in candidates if not get_scheme(c).adaptive and (per_frame or not get_scheme(c).per_frame)]
    return names


def score_schemes(names: list[str], length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
                  oracle, sampler: Sampler | None = None, options: LevelOptions | None = None,
                  context_noise: float | None = None, denoiser=None) -> list[SchemeScore]:
    return [score_scheme(n, length, n_obs, max_frames, step_size, oracle=oracle, sampler=sampler, options=options,
                         context_noise=context_noise, denoiser=denoiser) for n in names]


def monte_carlo_scheme(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
                       oracle, sampler: Sampler, num_videos: int, seed: int = 0,
                       batch_size: int = 64, options: LevelOptions | None = None,
                       context_noise: float | None = None, denoiser=None) -> KLEstimate:
    """Sample `num_videos` oracle videos through the Executor with `sampler`; every pixel's time
    series is one sample of the joint. Returns the bias-corrected KL estimate with its error bar."""
    from fdm_engine.executor import Executor, SamplingState

    if num_videos < 1:
        raise FdmError(f"--monte-carlo must be >= 1 (got {num_videos})")
    pixels = oracle.config.channels * oracle.config.size**2
    if num_videos * pixels <= length + 1:
        raise FdmError(f"--monte-carlo {num_videos} gives {num_videos * pixels} pixel series, too few for a "
                       f"{length}-frame covariance: raise it or the oracle's size (e.g. size=32)")
    step_size = check_args(length, n_obs, max_frames, step_size)
    check_covariances(length)
    g = torch.Generator().manual_seed(seed)
    c = oracle.config
    given = (oracle.sample_prior(num_videos, n_obs, generator=g) if n_obs
             else torch.zeros(num_videos, 0, c.channels, c.size, c.size))
    state = SamplingState.start(given, length)
    executor = Executor(oracle if denoiser is None else denoiser, sampler, batch_size=batch_size, seed=seed,
                        context_noise=context_noise)
    options = level_options(sampler, options)
    executor.run(job_source(scheme, length, n_obs, max_frames, step_size, options=options), state)
    return kl_estimate(pixel_series(state.buffer), oracle.covariance(torch.arange(length)))
