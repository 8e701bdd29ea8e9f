"""Exact linear-Gaussian propagation of a plan through the analytic oracle (docs/oracle.md).

With the oracle every job is an affine-Gaussian map of its observed frames, the same for every
pixel:

    x_L = gain @ x_O + offset + noise @ w        w ~ N(0, I), fresh for this job

(the exact conditional: gain = Sigma_LO Sigma_OO^-1, noise = chol(P), offset = 0; a real sampler:
see `sampler_map`). Given frames are drawn from the true prior. So one pixel's whole video is
Gaussian, x ~ N(mean, cov), and both follow job by job:

    cov[L, D] = gain @ cov[O, D]     (D: every frame done so far; O is a subset of D)
    cov[L, L] = gain @ cov[O, O] @ gain.T + noise @ noise.T

log det cov comes from the chain rule: given every earlier frame, a job's latent frames vary only
through its own fresh noise, so log det cov = log det Sigma_GG + sum over jobs of
log det(noise @ noise.T). That keeps the KL accurate where cov is close to singular.
All tensors here are float64 on the CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from fdm_engine.errors import FdmError
from sampling_schemes import Plan


@dataclasses.dataclass(frozen=True)
class JobMap:
    """One job as an affine-Gaussian map: x_L = gain @ x_O + offset + noise @ w.

    gain [L, O], noise [L, W] (W fresh standard normals), offset [L].
    """

    gain: torch.Tensor
    noise: torch.Tensor
    offset: torch.Tensor

    @property
    def covariance(self) -> torch.Tensor:
        """[L, L] covariance of x_L given x_O."""
        return self.noise @ self.noise.T

    def logdet(self) -> float:
        """log det of `covariance` (-inf when singular)."""
        return logdet_psd(self.covariance)


# (observed, latent) -> JobMap. Absolute frame indices, sorted.
JobMapper = Callable[[Sequence[int], Sequence[int]], JobMap]


def logdet_psd(m: torch.Tensor) -> float:
    """log det of a symmetric positive semi-definite [d, d] matrix; -inf where it is singular."""
    if m.shape[0] == 0:
        return 0.0
    chol, info = torch.linalg.cholesky_ex(m)
    if int(info) != 0:
        return float("-inf")
    return 2.0 * float(torch.log(torch.diagonal(chol)).sum())


def cholesky_or_fail(sigma: torch.Tensor, what: str) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        raise FdmError(f"{what} is numerically singular, so KL to it is undefined: use a kernel with a "
                       f"non-degenerate covariance (ou, or periodic with weight < 1) or fewer frames")
    return chol


def gaussian_kl(mean: torch.Tensor, cov: torch.Tensor, sigma: torch.Tensor,
                logdet_cov: float | None = None, chol_sigma: torch.Tensor | None = None) -> float:
    """KL(N(mean, cov) || N(0, sigma)) in nats. mean [d], cov [d, d], sigma [d, d].

    logdet_cov: pass it when known more accurately than from `cov` (the chain rule above).
    """
    d = sigma.shape[0]
    chol = cholesky_or_fail(sigma, "the true covariance") if chol_sigma is None else chol_sigma
    trace = float(torch.diagonal(torch.cholesky_solve(cov, chol)).sum())
    maha = float(mean @ torch.cholesky_solve(mean[:, None], chol)[:, 0])
    logdet_sigma = 2.0 * float(torch.log(torch.diagonal(chol)).sum())
    logdet_cov = logdet_psd(cov) if logdet_cov is None else logdet_cov
    if logdet_cov == float("-inf"):
        return float("inf")
    return 0.5 * (trace + maha - d + logdet_sigma - logdet_cov)


@dataclasses.dataclass(frozen=True)
class Joint:
    """One pixel's video as the plan makes it: N(mean, cov). mean [T], cov [T, T]."""

    mean: torch.Tensor
    cov: torch.Tensor
    logdet: float


def propagate(plan: Plan, sigma: torch.Tensor, mapper: JobMapper) -> Joint:
    """The joint a plan produces when each job draws from `mapper`'s map. sigma [T, T] is the true
    prior (the given frames 0..n_obs-1 are drawn from it)."""
    T, n = plan.length, plan.n_obs
    mean = torch.zeros(T, dtype=torch.float64)
    cov = torch.zeros(T, T, dtype=torch.float64)
    cov[:n, :n] = sigma[:n, :n]
    logdet = logdet_psd(sigma[:n, :n])
    done = list(range(n))
    for job in plan.jobs:
        m = mapper(job.observed, job.latent)
        o, lat, d = (torch.tensor(v, dtype=torch.long) for v in (job.observed, job.latent, done))
        cross = m.gain @ cov[o[:, None], d[None, :]]  # [L, D]
        cov[lat[:, None], d[None, :]] = cross
        cov[d[:, None], lat[None, :]] = cross.T
        cov[lat[:, None], lat[None, :]] = m.gain @ cov[o[:, None], o[None, :]] @ m.gain.T + m.covariance
        mean[lat] = m.gain @ mean[o] + m.offset
        logdet += m.logdet()
        done += job.latent
    return Joint(mean, cov, logdet)


def relative_key(observed: Sequence[int], latent: Sequence[int]) -> tuple:
    """Jobs that differ by a shift in time share their map (the GP is stationary)."""
    base = min(list(observed) + list(latent))
    return tuple(o - base for o in observed), tuple(t - base for t in latent)


class ExactConditional:
    """The ideal job: x_L drawn from the oracle's exact conditional (gain G, noise chol(P))."""

    name = "exact"

    def __init__(self, oracle):
        self.oracle = oracle
        self._cache: dict[tuple, JobMap] = {}

    def __call__(self, observed: Sequence[int], latent: Sequence[int]) -> JobMap:
        key = relative_key(observed, latent)
        if key not in self._cache:
            frames = torch.tensor(key[0] + key[1])
            n_o = len(observed)
            g, p = self.oracle.conditional(frames, list(range(n_o)), list(range(n_o, len(frames))))
            chol, info = torch.linalg.cholesky_ex(p)
            if int(info) != 0:  # a latent frame fully determined by the observed ones (degenerate kernel)
                evals, evecs = torch.linalg.eigh(p)
                chol = evecs * evals.clamp(min=0).sqrt()
            self._cache[key] = JobMap(g, chol, torch.zeros(len(latent), dtype=torch.float64))
        return self._cache[key]


def variance_ratio(cov: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """[T] per-frame marginal variance of the scheme over the true one."""
    return torch.diagonal(cov) / torch.diagonal(sigma)


def error_by_distance(cov: torch.Tensor, sigma: torch.Tensor, n_obs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariance error against frame distance d = j - i: ([T] mean signed, [T] mean absolute) of
    (cov - sigma)[i, j] / prior variance, over pairs whose later frame j >= n_obs (pairs of given
    frames are exact by construction and would only dilute the curve)."""
    T = cov.shape[0]
    err = (cov - sigma) / torch.diagonal(sigma).mean()
    signed = torch.zeros(T, dtype=torch.float64)
    absolute = torch.zeros(T, dtype=torch.float64)
    for d in range(T):
        diag = torch.diagonal(err, offset=d)[max(n_obs - d, 0):]  # entries (i, i + d), i + d >= n_obs
        if len(diag):
            signed[d], absolute[d] = diag.mean(), diag.abs().mean()
    return signed, absolute
