"""One denoising job: (model, sampler, latent noise, frames, observed mask, clean observed values)
-> latent frames. The executor batches many jobs into one such call."""

from __future__ import annotations

from typing import Callable

import torch

from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.samplers.base import Sampler


@torch.no_grad()
def run_job(model, sampler: Sampler, noise: torch.Tensor, frame_indices: torch.Tensor,
            observed: torch.Tensor, x_obs: torch.Tensor, valid: torch.Tensor | None = None,
            levels: torch.Tensor | None = None,
            step_noise: Callable[[int], torch.Tensor] | torch.Generator | None = None) -> torch.Tensor:
    """Sample the latent frames of a batch of jobs.

    noise         [B, F, C, H, W]  starting noise (used on latent slots)
    frame_indices [B, F] int64     absolute frame indices
    observed      [B, F] bool      conditioning slots; they keep `x_obs` and are never altered
    x_obs         [B, F, C, H, W]  clean values on observed slots (other slots ignored)
    valid         [B, F] bool      False on padding slots (passed through to the model)
    levels        [n+1, B, F]      per-frame noise-level trajectory ending at -1 (clean); default:
                                   every latent frame follows `sampler.trajectory()`
    step_noise    fresh noise for stochastic samplers: a function of the step index returning
                  [B, F, C, H, W], or a generator
    returns       [B, F, C, H, W]  observed slots = x_obs, latent slots = samples
    """
    B, F = observed.shape
    sampler.reset()
    if levels is None:
        levels = sampler.trajectory()[:, None, None].expand(-1, B, F)
    levels = torch.where(observed[None].cpu(), torch.full_like(levels, -1.0), levels.to(torch.float64))
    obs = expand_like(observed, x_obs).bool()
    x = torch.where(obs, x_obs, noise)
    for i in range(levels.shape[0] - 1):
        t, t_next = levels[i], levels[i + 1]
        model_levels = t.clamp(min=0).to(device=x.device, dtype=torch.float32)  # 0 on observed
        out = model(x, frame_indices, model_levels, observed, valid=valid)
        z = None
        if sampler.stochastic:
            z = step_noise(i) if callable(step_noise) else torch.randn(
                x.shape, generator=step_noise, dtype=x.dtype, device="cpu").to(x.device)
        x = sampler.step(out, t, t_next, x, noise=z)
    return torch.where(obs, x_obs, x)
