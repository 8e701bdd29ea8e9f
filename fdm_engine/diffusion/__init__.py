"""Diffusion math: schedules, forward noising, prediction types, the loss, timestep spacings."""

from fdm_engine.diffusion.loss import diffusion_loss, masked_mse
from fdm_engine.diffusion.prediction import convert, from_x0, target, to_x0
from fdm_engine.diffusion.schedule import DiffusionConfig, NoiseSchedule, cosine_betas, expand_like, linear_betas
from fdm_engine.diffusion.spacing import SPACINGS, timesteps_for

__all__ = [
    "DiffusionConfig", "NoiseSchedule", "linear_betas", "cosine_betas", "expand_like",
    "to_x0", "from_x0", "convert", "target", "diffusion_loss", "masked_mse", "SPACINGS", "timesteps_for",
]
