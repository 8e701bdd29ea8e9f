"""Noise schedules: betas, alpha-bar, log-SNR and forward noising, over discrete timesteps.

Timesteps are floats in [0, N-1]; fractional ones interpolate log-SNR linearly. A timestep < 0
means "clean" (alpha-bar = 1): observed frames and the end of every sampling trajectory.

Beta schedules ("linear", "cosine") define alpha-bar through betas. Log-SNR schedules
("logsnr-cosine", "logsnr-linear": continuous-time models such as video_diffusion's VDM) define
the log-SNR of continuous time u in [0, 1] and are read on the grid the published sampler steps
through (docs/checkpoints.md, "video_diffusion"); their betas follow from alpha-bar.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from fdm_engine.config import Config
from fdm_engine.errors import FdmError

PREDICTIONS = ("eps", "x0", "v")
BETA_SCHEDULES = ("linear", "cosine")
LOGSNR_SCHEDULES = ("logsnr-cosine", "logsnr-linear")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(Config):
    schedule: str = "linear"  # linear | cosine
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "eps"  # eps | x0 | v
    logsnr_min: float = -20.0  # log-SNR schedules only: the log-SNR at u = 1 ...
    logsnr_max: float = 20.0  # ... and at u = 0

    def __post_init__(self):
        if self.schedule not in BETA_SCHEDULES + LOGSNR_SCHEDULES:
            raise FdmError(f"unknown noise schedule {self.schedule!r} (known: "
                           f"{', '.join(BETA_SCHEDULES + LOGSNR_SCHEDULES)})")
        if self.schedule in LOGSNR_SCHEDULES and not self.logsnr_min < self.logsnr_max:  # also false for NaN
            raise FdmError(f"log-SNR schedule needs logsnr_min < logsnr_max (got {self.logsnr_min}, "
                           f"{self.logsnr_max})")
        if self.prediction not in PREDICTIONS:
            raise FdmError(f"unknown prediction type {self.prediction!r} (known: {', '.join(PREDICTIONS)})")
        if self.num_steps < 1:
            raise FdmError(f"num_steps must be >= 1 (got {self.num_steps})")
        if not 0 < self.beta_start <= self.beta_end < 1:  # also false for NaN
            raise FdmError(f"betas must satisfy 0 < beta_start <= beta_end < 1 (got beta_start "
                           f"{self.beta_start}, beta_end {self.beta_end})")


def linear_betas(n: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear schedule, rescaled so any length n spans the same noise range as 1000."""
    scale = 1000 / n
    return torch.linspace(scale * beta_start, scale * beta_end, n, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(n: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos((t/n + s)/(1 + s) * pi/2)^2."""
    def f(t: float) -> float:
        return math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(n)], dtype=torch.float64)


def logsnr_grid(schedule: str, n: int, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """The log-SNR a continuous-time model sees at each of our timesteps 0..n-1, float32 [n].

    video_diffusion tabulates lambda(u) at u = k/n, k = 0..n (cosine: lambda = -2 log tan(a u + b),
    lambda(0) = logsnr_max, lambda(1) = logsnr_min; linear in u otherwise), in float32. Its
    sampler's step i (i = n-1 .. 0) runs the network at u = (i+1)/n, looked up as entry
    int(float32((i+1)/n) * n): our timestep i is that entry, computed the same way so the
    network sees the very values it saw there (the float32 product can land one entry low).
    """
    u = torch.linspace(0, 1, n + 1, dtype=torch.float32)
    if schedule == "logsnr-cosine":
        b = math.atan(math.exp(-0.5 * logsnr_max))
        a = math.atan(math.exp(-0.5 * logsnr_min)) - b
        table = -2.0 * torch.log(torch.tan(a * u + b))
    elif schedule == "logsnr-linear":
        table = logsnr_max + (logsnr_min - logsnr_max) * u
    else:
        raise FdmError(f"{schedule!r} is not a log-SNR schedule (known: {', '.join(LOGSNR_SCHEDULES)})")
    entry = ((torch.arange(1, n + 1) / n) * n).long().clamp(0, n)
    return table[entry]


class NoiseSchedule:
    """alpha_bar and friends for one DiffusionConfig. Tables are float64 on the CPU."""

    def __init__(self, config: DiffusionConfig | None = None, betas: torch.Tensor | None = None):
        self.config = config or DiffusionConfig()
        if betas is None:
            c = self.config
            if c.schedule in LOGSNR_SCHEDULES:
                ab = torch.sigmoid(logsnr_grid(c.schedule, c.num_steps, c.logsnr_min, c.logsnr_max).double())
                betas = 1 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
            else:
                betas = (linear_betas(c.num_steps, c.beta_start, c.beta_end) if c.schedule == "linear"
                         else cosine_betas(c.num_steps))
        self.betas = betas.to(torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)  # [N]
        self.log_snrs = torch.log(self.alphas_cumprod / (1 - self.alphas_cumprod))  # [N], decreasing
        bad = ~torch.isfinite(self.log_snrs)
        if bad.any():  # e.g. betas of 1 somewhere: alpha-bar 0, every later frame NaN
            raise FdmError(f"noise schedule {self.config.schedule} with {self.num_steps} steps: alpha-bar is 0 or 1 "
                           f"from step {int(bad.nonzero()[0])} (log-SNR not finite); check the betas")

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def prediction(self) -> str:
        return self.config.prediction

    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        """alpha_bar at (possibly fractional) timesteps t; 1 where t < 0. Same shape as t, float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        clean = t < 0
        tc = t.clamp(0, self.num_steps - 1)
        lo = tc.floor().long()
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = tc - lo
        lam = self.log_snrs[lo] * (1 - w) + self.log_snrs[hi] * w
        return torch.where(clean, torch.ones_like(t), torch.sigmoid(lam))

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, s) with x_t = a * x0 + s * eps."""
        return alpha_sigma_of(self.alpha_bar(t))

    def log_snr(self, t: torch.Tensor | float) -> torch.Tensor:
        ab = self.alpha_bar(t)
        return torch.log(ab / (1 - ab))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising. x0, noise [B, F, ...]; t [B, F] (or broadcastable to x0's leading dims)."""
        a, s = self.alpha_sigma(t)
        a, s = expand_like(a, x0), expand_like(s, x0)
        return a * x0 + s * noise

    def respace(self, timesteps) -> "NoiseSchedule":
        """The schedule that jumps between the given timesteps (improved-DDPM respacing).

        new beta_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}); `timestep_map` maps the new indices
        back to the original timesteps, which is what a network trained on the full schedule sees.
        """
        ts = sorted({int(t) for t in timesteps})
        ab = self.alphas_cumprod[ts]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        out = NoiseSchedule(self.config, betas=1 - ab / prev)
        out.timestep_map = torch.tensor(ts)
        return out


def alpha_sigma_of(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) from alpha-bar: a = sqrt(alpha-bar), s = sqrt(1 - alpha-bar)."""
    return alpha_bar.sqrt(), (1 - alpha_bar).clamp(min=0).sqrt()


def expand_like(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B, F] (or any leading shape) -> broadcastable against x, in x's dtype and device."""
    coef = coef.to(device=x.device, dtype=x.dtype)
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))
