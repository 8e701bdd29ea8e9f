"""Exact sampler score: how far one job's output is from the true conditional, in nats.

A job observes y = x_O (drawn from the prior) and the sampler returns x_L = G_s y + b + R_s w
(measured by running the real sampler, see `sampler_map`); the truth is x_L = G y + chol(P) w'.
The score is the KL between the two joints of (y, x_L) for one pixel, i.e. the conditional KL
averaged over y:

    E_y KL = 1/2 [tr(P^-1 P_s) - L + log det P - log det P_s + tr((G_s - G)^T P^-1 (G_s - G) Sigma_OO)
                  + b^T P^-1 b],   P_s = R_s R_s^T.

Default job (`DEFAULT_JOB`): an autoregressive job at K = 20, S = 10: observe frames 0..9,
generate 10..19. Any observed/latent frames can be given (observed may be empty: unconditional).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import torch

from fdm_engine.errors import FdmError, short_list
from fdm_engine.evaluation.gaussian import ExactConditional, JobMap, gaussian_kl, logdet_psd
from fdm_engine.evaluation.montecarlo import KLEstimate, kl_estimate
from fdm_engine.evaluation.sampler_map import num_steps, sampler_job_map
from fdm_engine.limits import check_memory
from fdm_engine.samplers import SAMPLERS, Sampler, make_sampler, run_job

DEFAULT_JOB = (tuple(range(10)), tuple(range(10, 20)))


@dataclasses.dataclass(frozen=True)
class SamplerScore:
    sampler: str
    steps: int  # requested
    steps_run: int  # moves actually made (a spacing may merge duplicate timesteps)
    spacing: str
    eta: float
    observed: tuple[int, ...]
    latent: tuple[int, ...]
    kl: float  # nats per pixel, joint of (y, x_L)
    variance_ratio: float  # mean over latent frames of diag(P_s) / diag(P)
    gain_error: float  # max |G_s - G|

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["observed"], d["latent"] = list(self.observed), list(self.latent)
        return d


def check_job(observed: Sequence[int], latent: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    observed, latent = tuple(int(i) for i in observed), tuple(int(i) for i in latent)
    if not latent:
        raise FdmError("--latent must name at least one frame")
    if min(observed + latent) < 0:
        raise FdmError(f"frame indices must be >= 0 (got {min(observed + latent)})")
    if len(set(observed + latent)) != len(observed + latent):
        raise FdmError(f"--observed and --latent must be distinct frames (got {short_list(observed)} and "
                       f"{short_list(latent)})")
    frames = len(observed) + len(latent)
    check_memory(6 * 8 * frames**2, f"a job of {frames} frames: its {frames}x{frames} covariances",
                 "name fewer --observed / --latent frames")
    return observed, latent


def joint_of_job(oracle, m: JobMap, observed: Sequence[int], latent: Sequence[int]):
    """(mean [O+L], cov [O+L, O+L], logdet) of (y, x_L) when x_L follows the map m; y from the prior."""
    frames = torch.tensor(list(observed) + list(latent))
    s_oo = oracle.covariance(frames[:len(observed)])
    n_o = len(observed)
    cov = torch.zeros(len(frames), len(frames), dtype=torch.float64)
    cov[:n_o, :n_o] = s_oo
    cov[n_o:, :n_o] = m.gain @ s_oo
    cov[:n_o, n_o:] = (m.gain @ s_oo).T
    cov[n_o:, n_o:] = m.gain @ s_oo @ m.gain.T + m.covariance
    mean = torch.cat([torch.zeros(n_o, dtype=torch.float64), m.offset])
    return mean, cov, logdet_psd(s_oo) + m.logdet(), oracle.covariance(frames)


def score_sampler(oracle, sampler: Sampler, observed: Sequence[int] = DEFAULT_JOB[0],
                  latent: Sequence[int] = DEFAULT_JOB[1]) -> SamplerScore:
    """Exact KL of one job sampled by `sampler` (with the oracle) to the true joint of (y, x_L)."""
    observed, latent = check_job(observed, latent)
    m = sampler_job_map(oracle, sampler, observed, latent)
    truth = ExactConditional(oracle)(observed, latent)
    mean, cov, logdet, sigma = joint_of_job(oracle, m, observed, latent)
    kl = gaussian_kl(mean, cov, sigma, logdet)
    ratio = float((torch.diagonal(m.covariance) / torch.diagonal(truth.covariance)).mean())
    gain_err = float((m.gain - truth.gain).abs().max()) if observed else 0.0
    c = sampler.config
    name = next((n for n in SAMPLERS.names() if SAMPLERS.get(n) is type(sampler)), type(sampler).__name__)
    return SamplerScore(name, c.steps, num_steps(sampler), c.spacing, c.eta, observed, latent, kl, ratio, gain_err)


def sweep(oracle, schedule, samplers: Iterable[str], spacings: Iterable[str], steps: Iterable[int],
          eta: float = 0.0, observed=DEFAULT_JOB[0], latent=DEFAULT_JOB[1],
          progress: bool = False) -> list[SamplerScore]:
    """score_sampler over every (sampler, spacing, steps); `progress`: a bar on stderr, a cell each."""
    from tqdm import tqdm

    cells = [(name, spacing, n) for name in samplers for spacing in spacings for n in steps]
    bar = tqdm(cells, desc="scoring samplers", unit="setting", disable=not progress)
    scores = []
    for name, spacing, n in bar:
        bar.set_postfix_str(f"{name} {spacing} {n}")
        scores.append(score_sampler(oracle, make_sampler(name, schedule, n, spacing, eta), observed, latent))
    return scores


def monte_carlo_sampler(oracle, sampler: Sampler, observed: Sequence[int] = DEFAULT_JOB[0],
                        latent: Sequence[int] = DEFAULT_JOB[1], num_pixels: int = 8192, seed: int = 0) -> KLEstimate:
    """The same KL estimated by sampling: y from the prior, x_L from run_job with random noise,
    `num_pixels` independent pixels in one batch. Returns the bias-corrected estimate and error bar."""
    observed, latent = check_job(observed, latent)
    F = len(observed) + len(latent)
    if num_pixels <= F + 1:
        raise FdmError(f"--monte-carlo {num_pixels}: too few pixels for the {F}-frame covariance; use more than "
                       f"{F + 1}")
    check_memory(4 * 8 * num_pixels * F, f"--monte-carlo {num_pixels}: {num_pixels} pixel series of {F} frames",
                 "lower --monte-carlo")
    g = torch.Generator().manual_seed(seed)
    frames = torch.tensor(list(observed) + list(latent))
    sigma = oracle.covariance(frames)  # [F, F]
    chol = torch.linalg.cholesky(sigma + 1e-12 * torch.eye(len(frames), dtype=torch.float64))
    x0 = (chol @ torch.randn(len(frames), num_pixels, generator=g, dtype=torch.float64))  # [F, N]
    x_obs = x0.T.reshape(1, num_pixels, len(frames)).permute(0, 2, 1)[:, :, None, None, :].contiguous()
    mask = torch.tensor([[True] * len(observed) + [False] * len(latent)])
    noise = torch.randn(x_obs.shape, generator=g, dtype=torch.float64)
    out = run_job(oracle, sampler, noise, frames[None], mask, x_obs, step_noise=g)
    return kl_estimate(out[0, :, 0, 0].T, sigma)  # samples [N, F]
