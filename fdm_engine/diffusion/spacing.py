"""Timestep spacings: which decreasing timesteps a sampler with n steps visits (docs/spacings.md)."""

from __future__ import annotations

import numpy as np
import torch

from fdm_engine.diffusion.schedule import NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.registry import Registry

SPACINGS: Registry = Registry("timestep spacing", group="fdm.spacings")


def _check(schedule: NoiseSchedule, n: int) -> int:
    if not 1 <= n <= schedule.num_steps:
        raise FdmError(f"--steps must be in 1..{schedule.num_steps} (got {n})")
    return schedule.num_steps


@SPACINGS.register("linspace")
def linspace(schedule: NoiseSchedule, n: int) -> torch.Tensor:
    """Uniform in t, exactly as improved-diffusion's `timestep_respacing n` picks them (one section):
    t_i = round(c_i) with c_0 = 0, c_{i+1} = c_i + (N-1)/(n-1) summed in float64 and rounded half to
    even. The running sum matters: at ties (n = 21, 23, ... of 1000) it rounds differently from
    round(linspace(N-1, 0, n)). n = 1 takes N-1 (start from noise), not the published {0}."""
    N = _check(schedule, n)
    if n == 1:
        return torch.tensor([N - 1])
    stride = (N - 1) / (n - 1)
    running = np.concatenate([[0.0], np.add.accumulate(np.full(n - 1, stride))])  # sequential, as a loop adds
    return torch.from_numpy(np.round(running).astype(np.int64)).flip(0)


@SPACINGS.register("trailing")
def trailing(schedule: NoiseSchedule, n: int) -> torch.Tensor:
    """diffusers' trailing: round(arange(N, 0, -N/n)) - 1."""
    N = _check(schedule, n)
    return torch.from_numpy(np.round(np.arange(N, 0, -N / n)).astype(np.int64) - 1)


def _nearest_timesteps(table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Indices of `table` nearest to each target, duplicates removed, decreasing."""
    idx = (table[None, :] - targets[:, None]).abs().argmin(dim=1)
    return torch.unique(idx).flip(0)


@SPACINGS.register("logsnr")
def logsnr(schedule: NoiseSchedule, n: int) -> torch.Tensor:
    """Uniform in log-SNR: timesteps nearest to linspace(lambda(N-1), lambda(0), n)."""
    N = _check(schedule, n)
    lam = schedule.log_snrs
    targets = torch.linspace(float(lam[N - 1]), float(lam[0]), n, dtype=torch.float64)
    return _nearest_timesteps(lam, targets)


@SPACINGS.register("karras")
def karras(schedule: NoiseSchedule, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5 in sigma = sqrt((1-ab)/ab), rho = 7, mapped to nearest timesteps."""
    _check(schedule, n)
    sigmas = ((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt()
    lo, hi = float(sigmas[0]) ** (1 / rho), float(sigmas[-1]) ** (1 / rho)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    targets = (hi + ramp * (lo - hi)) ** rho
    return _nearest_timesteps(sigmas.log(), targets.log())


# Log-SNR positions (fractions of [lambda(N-1), lambda(0)]) of the 10 timesteps that minimise the
# exact KL of DPM-Solver++(2M) on the periodic oracle's 10-observed / 10-latent job, measured by
# `fdm eval optimize-steps dpm++2m --steps 10 --max-evaluations 300` (KL 4.8e-5 vs logsnr's 3.1e-3;
# it transfers to the other kernels and observed sets of its report, see README).
OPTIMISED_PROFILE = (0.0, 0.09553, 0.36324, 0.45565, 0.56283, 0.66522, 0.75111, 0.83452, 0.9179, 1.0)


@SPACINGS.register("optimised")
def optimised(schedule: NoiseSchedule, n: int) -> torch.Tensor:
    """The measured optimal log-SNR profile above, resampled to n steps (piecewise linear in k/(n-1));
    fractional timesteps (log-SNR is interpolated between integer ones)."""
    N = _check(schedule, n)
    if n == 1:
        return torch.tensor([float(N - 1)], dtype=torch.float64)
    grid = np.linspace(0, 1, len(OPTIMISED_PROFILE))
    pos = np.interp(np.linspace(0, 1, n), grid, OPTIMISED_PROFILE)
    lam = schedule.log_snrs.numpy()
    targets = lam[-1] + pos * (lam[0] - lam[-1])
    ts = np.interp(targets, lam[::-1], np.arange(N - 1, -1, -1, dtype=np.float64))
    ts[0] = N - 1  # exactly the top: the start noise is N(0, I) there
    return torch.from_numpy(ts)


def is_spacing_file(spacing: str) -> bool:
    return str(spacing).endswith(".json")


def read_timesteps(path: str) -> list[float]:
    """The timesteps listed in a spacing file, before the checks against a schedule (so without
    one: their number sets the steps)."""
    import json
    from pathlib import Path

    where = f"--spacing {path}"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FdmError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FdmError(f"{where}: not a JSON file ({e})") from None
    ts = data.get("timesteps") if isinstance(data, dict) else data
    if not isinstance(ts, list) or not ts or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t) for t in ts):
        raise FdmError(f"{where}: expected a non-empty list of timesteps (numbers), or {{\"timesteps\": [...]}}")
    return ts


def load_spacing_file(path: str, schedule: NoiseSchedule) -> torch.Tensor:
    """Timesteps [n] float64 from a JSON file: a list of numbers, or an object whose "timesteps"
    is one (as `fdm eval optimize-steps` writes). Strictly decreasing, within [0, N-1];
    fractional timesteps interpolate log-SNR. Any problem: one FdmError line naming the file."""
    where = f"--spacing {path}"
    ts = read_timesteps(path)
    N = schedule.num_steps
    bad = next((i for i in range(1, len(ts)) if not ts[i] < ts[i - 1]), None)
    if bad is not None:
        raise FdmError(f"{where}: timesteps must be strictly decreasing (entry {bad}: {ts[bad]} after {ts[bad - 1]})")
    if ts[0] > N - 1 or ts[-1] < 0:
        raise FdmError(f"{where}: timesteps must lie in [0, {N - 1}] (got {ts[0]} .. {ts[-1]})")
    return torch.tensor(ts, dtype=torch.float64)


def timesteps_for(schedule: NoiseSchedule, n: int, spacing: str) -> torch.Tensor:
    """Decreasing timesteps [n'] (n' <= n when a spacing merges duplicates); a spacing ending in
    .json is a file of timesteps (then n is not used)."""
    if is_spacing_file(spacing):
        return load_spacing_file(spacing, schedule)
    return SPACINGS.get(spacing)(schedule, n)
