"""The training loss: L2 on the model's prediction type, averaged over latent frames only."""

from __future__ import annotations

import torch

from fdm_engine.diffusion import prediction
from fdm_engine.diffusion.schedule import NoiseSchedule, expand_like
from fdm_engine.registry import Registry

# How a training example's timesteps are drawn (`fdm train --noise-levels`): name ->
# (B, F, num_steps, generator) -> t [B] (one per clip) or [B, F] (one per frame).
LEVEL_DRAWS: Registry = Registry("noise-level draw")


@LEVEL_DRAWS.register("per-clip")
def per_clip(B: int, F: int, num_steps: int, generator=None) -> torch.Tensor:
    """One level per clip, uniform over the N steps (DDPM, FDM)."""
    return torch.randint(0, num_steps, (B,), generator=generator)


@LEVEL_DRAWS.register("per-frame")
def per_frame(B: int, F: int, num_steps: int, generator=None) -> torch.Tensor:
    """An independent uniform level per frame (Diffusion Forcing, Chen et al. 2024): the model
    learns to denoise frames that sit at different levels in one call."""
    return torch.randint(0, num_steps, (B, F), generator=generator)



def masked_mse(pred: torch.Tensor, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Mean squared error over latent frames only.

    pred, target [B, F, C, H, W]; latent [B, F] bool (not observed, not padding). Each latent
    frame weighs the same; observed and padding frames contribute nothing, so the published
    normalisation by K (all slots) is not repeated.
    """
    per_frame = (pred - target).pow(2).flatten(2).mean(-1)  # [B, F]
    w = latent.to(per_frame.dtype)
    return (per_frame * w).sum() / w.sum().clamp(min=1)


def diffusion_loss(model, schedule: NoiseSchedule, x0: torch.Tensor, frame_indices: torch.Tensor,
                   observed: torch.Tensor, valid: torch.Tensor | None = None,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, draw: str = "per-clip") -> torch.Tensor:
    """One training loss for the denoiser contract (docs/denoiser.md).

    x0 [B, F, C, H, W] clean frames; observed [B, F] bool; valid [B, F] bool (False = padding).
    t [B] or [B, F] timesteps (if omitted, drawn by LEVEL_DRAWS[draw]: per clip, or per frame);
    observed frames get level 0 and keep their clean values either way.
    """
    B, F = observed.shape
    valid = torch.ones_like(observed) if valid is None else valid
    if t is None:
        t = LEVEL_DRAWS.get(draw)(B, F, schedule.num_steps, generator).to(x0.device)
    if t.dim() == 1:
        t = t[:, None].expand(B, F)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = torch.where(expand_like(observed, x0).bool(), x0, schedule.q_sample(x0, t, noise))
    levels = torch.where(observed, torch.zeros_like(t), t)
    pred = model(x_t, frame_indices, levels, observed, valid=valid)
    a, s = schedule.alpha_sigma(t)
    tgt = prediction.target(schedule.prediction, x0, noise, expand_like(a, x0), expand_like(s, x0))
    return masked_mse(pred, tgt, ~observed & valid)
