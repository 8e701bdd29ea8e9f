"""Reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7): conditional sampling
from a model trained unconditionally, as a wrapper under the denoiser contract (docs/denoiser.md).

For a job with observed frames a (clean values x^a) and latent frames b at level t, the wrapped
model sees every real frame as latent at level t: the observed ones noised to
z^a = alpha_t x^a + sigma_t eps (eps seeded by the job's frame indices and level, so results do
not depend on batching). With x_hat = the model's x0 estimate for all frames,

    x_tilde^b = x_hat^b - (w_r alpha_t / 2) grad_{z^b} || x^a - x_hat^a(z) ||^2

and the wrapper returns the prediction (eps, x0 or v, as the model's) consistent with x_tilde^b
at z^b, so any sampler and the executor use it unchanged. With w_r = 0 it is Ho et al.'s
replacement method; with no observed frame, the model itself.
"""

from __future__ import annotations

import torch
from torch import nn

from fdm_engine.diffusion import prediction
from fdm_engine.diffusion.schedule import NoiseSchedule, expand_like
from fdm_engine.precision import expose_model_attributes


class ReconstructionGuidance(nn.Module):
    """model(x, frame_indices, noise_levels, observed, valid) made conditional by guidance.

    `schedule` is the model's NoiseSchedule (its prediction type and alpha/sigma); `weight` is
    w_r (Ho et al. found w_r > 1 better than 1).
    """

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, weight: float = 2.0, seed: int = 0):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.weight = weight
        self.seed = seed
        expose_model_attributes(self, model)

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        """x [B, F, C, H, W] (observed slots clean); noise_levels [B, F] (0 on observed)."""
        if not bool(observed.any()):
            return self.model(x, frame_indices, noise_levels, torch.zeros_like(observed), valid=valid)
        real = torch.ones_like(observed) if valid is None else valid
        latent = real & ~observed
        # Level of each job: its latent frames' (largest) level; observed frames are noised to it.
        t_job = torch.where(latent, noise_levels, torch.zeros_like(noise_levels)).amax(dim=1)  # [B]
        levels = torch.where(observed, t_job[:, None].expand_as(noise_levels), noise_levels)  # [B, F]
        a, s = self.schedule.alpha_sigma(levels.detach().double().cpu())
        a, s = expand_like(a, x), expand_like(s, x)  # [B, F, 1, 1, 1]
        obs5 = expand_like(observed, x).bool()
        z = torch.where(obs5, a * x + s * self._noise(x, frame_indices, t_job), x)
        with torch.enable_grad():
            z = z.detach().requires_grad_(self.weight != 0)
            pred = self.model(z, frame_indices, levels, torch.zeros_like(observed), valid=valid)
            x0_hat = prediction.to_x0(pred, self.schedule.prediction, z, a, s)
            if self.weight == 0:  # the replacement method: no correction
                return pred.detach()
            err = ((x - x0_hat).pow(2) * obs5).sum()
            (grad,) = torch.autograd.grad(err, z)
        x0_tilde = x0_hat.detach() - self.weight * a / 2 * grad
        return prediction.from_x0(x0_tilde, self.schedule.prediction, z.detach(), a, s).detach()

    def _noise(self, x: torch.Tensor, frame_indices: torch.Tensor, t_job: torch.Tensor) -> torch.Tensor:
        """eps [B, F, C, H, W], a function of (seed, the row's frame indices, its level) only."""
        rows = []
        for b in range(x.shape[0]):
            key = [self.seed, int(round(float(t_job[b]) * 1000)), *(int(i) for i in frame_indices[b])]
            g = torch.Generator().manual_seed(hash(tuple(key)) % 2**63)
            rows.append(torch.randn(x.shape[1:], generator=g, dtype=torch.float32))
        return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def for_checkpoint(loaded, schedule: NoiseSchedule | None = None, *, seed: int = 0,
                   network: nn.Module | None = None) -> nn.Module:
    """The denoiser to sample a loaded checkpoint with: its model (or `network`, the model wrapped
    e.g. for precision), in reconstruction guidance when its trainer recorded
    `extra["guidance"] = {"method": "reconstruction", "weight": w}` (models trained
    unconditionally: vdm, ssm). `seed` is the sampling run's: it keys the guidance noise."""
    network = loaded.model if network is None else network
    spec = (loaded.extra or {}).get("guidance")
    if not spec or spec.get("method") != "reconstruction":
        return network
    return ReconstructionGuidance(network, schedule or NoiseSchedule(loaded.diffusion),
                                  float(spec.get("weight", 2.0)), seed=seed)
