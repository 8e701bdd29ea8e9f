"""Step schedules optimised on the exact sampler KL.

For a sampler with n network evaluations (m visited levels), the first level stays at the top of
the schedule (the start noise is N(0, I) only there); the other m - 1 are placed by their
log-SNR: positions in (0, 1) of the range [lambda(N-1), lambda(0)], strictly increasing by
construction (cumulative softmax weights, one slack weight keeping the last one below lambda(0)).
Powell's derivative-free method minimises log KL of the job over these weights (each evaluation
runs the real sampler through `score_sampler`), starting from logsnr spacing. Fractional
timesteps are kept: the schedule interpolates log-SNR between integer timesteps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import torch

from fdm_engine.evaluation.sampler_score import DEFAULT_JOB, score_sampler
from fdm_engine.samplers import SAMPLERS, SamplerConfig


def timesteps_from_weights(schedule, u: np.ndarray) -> torch.Tensor:
    """u [m] (m - 1 gap weights and a slack) -> timesteps [m] float64, strictly decreasing, t_0 = N-1."""
    lam = schedule.log_snrs.numpy()  # [N], decreasing in t
    N = len(lam)
    w = np.exp(u - u.max())
    pos = np.cumsum(w / w.sum())[:-1]  # [m - 1] in (0, 1), increasing
    targets = lam[-1] + pos * (lam[0] - lam[-1])
    ts = np.interp(targets, lam[::-1], np.arange(N - 1, -1, -1, dtype=np.float64))
    return torch.tensor(np.concatenate([[N - 1.0], ts]), dtype=torch.float64)


def logsnr_weights(m: int) -> np.ndarray:
    """Weights whose timesteps are (nearly) uniform in log-SNR, ending at t = 0: the start point."""
    return np.concatenate([np.zeros(max(m - 1, 0)), [math.log(1e-3)]])


@dataclasses.dataclass
class OptimisedSchedule:
    sampler: str
    steps: int
    timesteps: list[float]
    kl: float
    kl_logsnr: float
    history: list[float]  # best KL after each evaluation
    evaluations: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make(name: str, schedule, steps: int, timesteps: torch.Tensor, eta: float = 0.0):
    sampler = SAMPLERS.get(name)(schedule, SamplerConfig(steps=steps, eta=eta))
    sampler.timesteps = timesteps
    sampler.reset()
    return sampler


def optimise_steps(oracle, name: str, steps: int, observed: Sequence[int] = DEFAULT_JOB[0],
                   latent: Sequence[int] = DEFAULT_JOB[1], eta: float = 0.0, max_evaluations: int = 400,
                   on_evaluation: Callable[[int, float], None] | None = None) -> OptimisedSchedule:
    """Timesteps minimising the exact KL of the job (observed, latent) for sampler `name` at
    `steps` network evaluations, with the oracle as the model."""
    from scipy.optimize import minimize

    schedule = oracle.schedule
    m = SAMPLERS.get(name)(schedule, SamplerConfig(steps=steps)).levels_for(steps)
    history: list[float] = []
    best = {"kl": math.inf, "u": None}

    def kl_of(u: np.ndarray) -> float:
        ts = timesteps_from_weights(schedule, u)
        kl = score_sampler(oracle, make(name, schedule, steps, ts, eta), observed, latent).kl
        if not math.isfinite(kl):
            kl = 1e6
        if kl < best["kl"]:
            best.update(kl=kl, u=u.copy())
        history.append(best["kl"])
        if on_evaluation:
            on_evaluation(len(history), best["kl"])
        return math.log(max(kl, 1e-30))

    from fdm_engine.samplers import make_sampler

    # The baseline reported is `--spacing logsnr` itself (integer timesteps), the same as the
    # transfer rows'; the search starts from its fractional twin (u0).
    logsnr = make_sampler(name, schedule, steps, "logsnr", eta)
    logsnr_kl = score_sampler(oracle, logsnr, observed, latent).kl
    u0 = logsnr_weights(m)
    kl_of(u0)
    if m > 1:
        minimize(kl_of, u0, method="Powell",
                 options={"maxfev": max_evaluations, "xtol": 1e-3, "ftol": 1e-4})
    ts, kl = timesteps_from_weights(schedule, best["u"]), best["kl"]
    if logsnr_kl < kl:  # the search never beat the integer logsnr steps: keep those
        ts, kl = logsnr.timesteps.to(torch.float64), logsnr_kl
    return OptimisedSchedule(name, steps, [float(t) for t in ts], kl, logsnr_kl, history, len(history))


# Settings a schedule optimised on one job is checked on: other kernels, lengthscales, observed sets.
TRANSFER = (
    ("oracle:periodic", DEFAULT_JOB),
    ("oracle:periodic:lengthscale=4,period=12,weight=0.8", DEFAULT_JOB),
    ("oracle:ou:lengthscale=4", DEFAULT_JOB),
    ("oracle:se:lengthscale=2", DEFAULT_JOB),  # longer SE lengthscales are singular over 20 frames
    ("oracle:periodic:lengthscale=16,period=48,weight=0.3", DEFAULT_JOB),
    ("oracle:periodic", ((0, 3, 6, 9), (1, 2, 4, 5, 7, 8))),  # a hierarchy-like interleaved job
    ("oracle:periodic", ((), tuple(range(10)))),  # unconditional
)


def transfer_report(result: OptimisedSchedule, oracles: Callable[[str], object], eta: float = 0.0,
                    settings=TRANSFER) -> list[dict]:
    """Exact KL of the optimised timesteps vs logsnr spacing (same sampler and steps) elsewhere.
    A setting whose true covariance is singular gets its reason instead of numbers."""
    from fdm_engine.errors import FdmError
    from fdm_engine.samplers import make_sampler

    rows = []
    for spec, (obs, lat) in settings:
        oracle = oracles(spec)
        try:
            rows.append(_transfer_row(result, oracle, spec, obs, lat, eta, make_sampler))
        except FdmError as e:
            rows.append({"oracle": spec, "observed": list(obs), "latent": list(lat), "error": str(e)})
    return rows


def _transfer_row(result, oracle, spec, obs, lat, eta, make_sampler) -> dict:
    ts = torch.tensor(result.timesteps, dtype=torch.float64)
    opt = score_sampler(oracle, make(result.sampler, oracle.schedule, result.steps, ts, eta), obs, lat).kl
    base = score_sampler(oracle, make_sampler(result.sampler, oracle.schedule, result.steps, "logsnr", eta),
                         obs, lat).kl
    return {"oracle": spec, "observed": list(obs), "latent": list(lat), "kl_logsnr": base,
            "kl_optimised": opt, "gain": base / opt if opt > 0 else math.inf}
