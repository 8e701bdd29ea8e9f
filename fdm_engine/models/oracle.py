"""The analytic oracle: an exact denoiser for Gaussian-process videos (docs/oracle.md).

Every pixel is an independent zero-mean GP over the frame index with covariance
scale^2 * k(d), d = difference of frame indices. Given all frames of a job, each seen as
z_i = a_i * x0_i + s_i * eps_i (observed frames: a = 1, s = 0), the posterior mean is

    E[x0 | z] = Sigma A (A Sigma A + S^2)^-1 z,

the same matrices for every pixel, so a job costs one F x F solve per batch element. Written this
way it equals the two-stage form in docs/oracle.md (condition on observed, then on noisy latents).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from fdm_engine.config import Config
from fdm_engine.diffusion.prediction import from_x0
from fdm_engine.diffusion.schedule import NoiseSchedule, expand_like
from fdm_engine.errors import FdmError
from fdm_engine.limits import check_memory
from fdm_engine.registry import Registry

# Covariance functions k(d) of the frame-index difference d. Plug-ins: entry-point group
# "fdm.covariances" ("fdm.kernels", its former name, still loads with a deprecation warning).
COVARIANCES: Registry = Registry("GP covariance", group="fdm.covariances", former_groups=("fdm.kernels",))


@COVARIANCES.register("ou")
def ou(d: torch.Tensor, lengthscale: float, **_) -> torch.Tensor:
    return torch.exp(-d.abs() / lengthscale)


@COVARIANCES.register("se")
def se(d: torch.Tensor, lengthscale: float, **_) -> torch.Tensor:
    return torch.exp(-(d**2) / (2 * lengthscale**2))


@COVARIANCES.register("periodic")
def periodic(d: torch.Tensor, lengthscale: float, period: float, weight: float, **_) -> torch.Tensor:
    return (1 - weight) * torch.exp(-d.abs() / lengthscale) + weight * torch.cos(2 * math.pi * d / period)


@dataclasses.dataclass(frozen=True)
class OracleConfig(Config):
    kernel: str = "periodic"
    lengthscale: float = 8.0
    period: float = 24.0
    weight: float = 0.5
    scale: float = 0.5
    channels: int = 1
    size: int = 8

    def __post_init__(self):
        COVARIANCES.get(self.kernel)  # raises FdmError for unknown covariances
        for name in ("lengthscale", "period", "scale"):
            if not getattr(self, name) > 0:
                raise FdmError(f"oracle {name} must be > 0 (got {getattr(self, name)})")
        if not 0 <= self.weight <= 1:
            raise FdmError(f"oracle weight must be in [0, 1] (got {self.weight})")
        if self.channels < 1 or self.size < 1:
            raise FdmError(f"oracle channels and size must be >= 1 (got {self.channels}, {self.size})")


def parse_oracle_spec(spec: str) -> OracleConfig:
    """'oracle:<kernel>[:key=value,...]' -> OracleConfig, e.g. 'oracle:ou:lengthscale=4,size=16'."""
    parts = spec.split(":", 2)
    if parts[0] != "oracle" or len(parts) < 2 or not parts[1]:
        raise FdmError(f"bad oracle spec {spec!r}: expected oracle:<kernel>[:key=value,...]")
    fields = {f.name: f.type for f in dataclasses.fields(OracleConfig)}
    kwargs: dict = {"kernel": parts[1]}
    for item in filter(None, (parts[2].split(",") if len(parts) == 3 else [])):
        key, eq, value = item.partition("=")
        if not eq or key not in fields or key == "kernel":
            raise FdmError(f"bad oracle option {item!r} in {spec!r} "
                           f"(keys: lengthscale, period, weight, scale, channels, size)")
        try:
            kwargs[key] = int(value) if key in ("channels", "size") else float(value)
        except ValueError:
            raise FdmError(f"bad oracle option {item!r} in {spec!r}: {value!r} is not a number") from None
    return OracleConfig(**kwargs)


class GaussianProcessOracle(nn.Module):
    """Exact E[x0 | x_t, observed] for GP videos, under the denoiser contract (docs/denoiser.md)."""

    Config = OracleConfig
    max_frames = None  # any number of frames

    def __init__(self, config: OracleConfig | None = None, schedule: NoiseSchedule | None = None):
        super().__init__()
        self.config = config or OracleConfig()
        self.schedule = schedule or NoiseSchedule()
        self.image_size = self.config.size
        self.channels = self.config.channels

    def covariance(self, frame_indices: torch.Tensor) -> torch.Tensor:
        """[..., F] frame indices -> [..., F, F] prior covariance of one pixel (float64)."""
        f = frame_indices.to(torch.float64)
        d = f[..., :, None] - f[..., None, :]
        c = self.config
        k = COVARIANCES.get(c.kernel)(d, lengthscale=c.lengthscale, period=c.period, weight=c.weight)
        return c.scale**2 * k

    def posterior_x0(self, x: torch.Tensor, frame_indices: torch.Tensor, noise_levels: torch.Tensor,
                     observed: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | all frames] [B, F, C, H, W]; padding slots are decoupled from real ones."""
        B, F = observed.shape
        valid = torch.ones_like(observed) if valid is None else valid
        sigma = self.covariance(frame_indices.cpu())  # [B, F, F]
        pair = valid[:, :, None] & valid[:, None, :]
        sigma = torch.where(pair.cpu(), sigma, torch.eye(F, dtype=torch.float64).expand(B, F, F))
        t = torch.where(observed, torch.full_like(noise_levels, -1.0), noise_levels).cpu()
        a, s = self.schedule.alpha_sigma(t)  # [B, F]
        m = a[:, :, None] * sigma * a[:, None, :] + torch.diag_embed(s**2)
        # Jitter relative to the prior variance keeps near-singular kernels (se, periodic) solvable.
        m = m + 1e-9 * self.config.scale**2 * torch.eye(F, dtype=torch.float64)
        z = x.detach().cpu().to(torch.float64).flatten(2)  # [B, F, C*H*W]
        x0 = sigma @ (a[:, :, None] * torch.linalg.solve(m, z))
        return x0.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        x0 = self.posterior_x0(x, frame_indices, noise_levels, observed, valid)
        if self.schedule.prediction == "x0":
            return x0
        t = torch.where(observed, torch.full_like(noise_levels, -1.0), noise_levels)
        a, s = self.schedule.alpha_sigma(t.cpu())
        a, s = expand_like(a, x), expand_like(s, x)
        kind = self.schedule.prediction
        pred = from_x0(x0, kind, x, a, s.clamp(min=1e-12))
        # Observed (clean) frames: the exact prediction is x0 itself, and eps = v = 0.
        clean = x0 if kind == "x0" else torch.zeros_like(x)
        return torch.where(expand_like(observed, x).bool(), clean, pred)

    def conditional(self, frame_indices: torch.Tensor, observed_idx: list[int], latent_idx: list[int]):
        """Exact x0_L | y_O for one video: (G, P) with mean G @ y and covariance P (float64)."""
        sigma = self.covariance(frame_indices)
        so, lo = sigma[observed_idx][:, observed_idx], sigma[latent_idx][:, observed_idx]
        g = torch.linalg.solve(so, lo.T).T if observed_idx else torch.zeros(len(latent_idx), 0, dtype=torch.float64)
        p = sigma[latent_idx][:, latent_idx] - g @ lo.T if observed_idx else sigma[latent_idx][:, latent_idx]
        return g, p

    def sample_prior(self, num_videos: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ground-truth GP videos [V, T, C, H, W] (float32, model space)."""
        c = self.config
        pixels = c.channels * c.size * c.size
        # float64 draws and their product with the Cholesky factor, then the float32 result.
        check_memory(num_videos * length * pixels * (8 + 8 + 4) + 16 * length**2,
                     f"oracle size={c.size}, channels={c.channels}: {num_videos} video(s) of {length} frames",
                     "lower the oracle's size")
        sigma = self.covariance(torch.arange(length)) + 1e-9 * c.scale**2 * torch.eye(length, dtype=torch.float64)
        chol = torch.linalg.cholesky(sigma)
        z = torch.randn(num_videos, length, c.channels * c.size * c.size, generator=generator, dtype=torch.float64)
        return (chol @ z).float().reshape(num_videos, length, c.channels, c.size, c.size)
