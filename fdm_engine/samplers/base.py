"""The sampler interface: diffusers-style `set_timesteps` / `step`, with per-frame noise levels.

A sampler moves latent frames from timestep t to t_next (t_next < t; -1 means clean). t and t_next
are tensors broadcastable to the leading [B, F] dims of the sample, so frames in one call may sit
at different noise levels (docs/denoiser.md). Frames with t < 0 (observed, clean) are returned unchanged.
"""

from __future__ import annotations

import dataclasses

import torch

from fdm_engine.config import Config
from fdm_engine.diffusion.prediction import to_x0
from fdm_engine.diffusion.schedule import NoiseSchedule, alpha_sigma_of, expand_like
from fdm_engine.diffusion.spacing import timesteps_for
from fdm_engine.sample_config import SampleConfig
from fdm_engine.samplers.history import FrameState


@dataclasses.dataclass(frozen=True)
class SamplerConfig(Config):
    # The defaults are the sampling run's (SampleConfig states them once).
    steps: int = SampleConfig.steps
    spacing: str = SampleConfig.spacing
    eta: float = SampleConfig.eta  # DDIM only: 0 deterministic, 1 DDPM-like
    # Clamp every x0 prediction to the data range [-1, 1], as the published samplers do by default
    # (improved-diffusion's clip_denoised). Off for the oracle: its Gaussian data is unbounded and
    # clamping would break the exact score.
    clip_denoised: bool = False


class Sampler:
    """Base class. Subclasses implement `update(x0, x_t, t, t_next, noise)`."""

    stochastic = False  # whether `step` consumes fresh noise
    # Whether `update` returns exactly x0 on every moving frame whose t_next < 0 (a `where` on
    # t_next < 0 in the update): then a step that ends every frame clean skips the update, which
    # is all of a one-step job's sampler arithmetic and the last step of every other.
    clean_step_is_x0 = False
    # Whether `update` itself returns `sample` unchanged where t < 0 (its weights there are 1 for x_t
    # and 0 for the rest): then `step` makes no pass over the batch to restore those slots.
    update_keeps_clean = False

    def __init__(self, schedule: NoiseSchedule, config: SamplerConfig | None = None):
        self.schedule = schedule
        self.config = config or SamplerConfig()
        self.set_timesteps(self.config.steps, self.config.spacing)

    def set_timesteps(self, num_steps: int, spacing: str | None = None) -> torch.Tensor:
        """Choose the visited timesteps (decreasing) and reset any multistep state."""
        spacing = spacing or self.config.spacing
        self.config = self.config.replace(steps=num_steps, spacing=spacing)
        self.timesteps = timesteps_for(self.schedule, self.levels_for(num_steps), spacing)  # [n], decreasing
        self.reset()
        return self.timesteps

    def levels_for(self, num_steps: int) -> int:
        """Distinct levels a sampler of `num_steps` network evaluations visits (one per evaluation)."""
        return num_steps

    def trajectory(self) -> torch.Tensor:
        """[n + 1] levels: the visited timesteps, then -1 (clean)."""
        return torch.cat([self.timesteps.to(torch.float64), torch.tensor([-1.0], dtype=torch.float64)])

    def reset(self) -> None:
        """Forget multistep history (call before each job)."""

    def carried(self) -> FrameState | None:
        """Each slot's multistep state after the last step, for the frames a later job carries on
        (None: this sampler keeps none). docs/perframe.md"""
        return None

    def carry_in(self, state: FrameState) -> None:
        """Go on from `state` (a batch of what `carried` gave, after `reset`)."""

    def step(self, model_output: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
             sample: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One move from t to t_next. sample, model_output [B, F, C, H, W]; t, t_next [B, F]."""
        t = torch.as_tensor(t, dtype=torch.float64)
        t_next = torch.as_tensor(t_next, dtype=torch.float64)
        x0 = self.denoised(model_output, t, sample)
        if self.stochastic and noise is None:
            noise = torch.randn_like(sample)
        keep = expand_like(t < 0, sample).bool()
        if self.clean_step_is_x0 and bool((t_next < 0).all()):
            # what update returns on moving frames; frames at t < 0 keep `sample`. In place when
            # x0 is a tensor of its own (no sampler history holds it): no new batch-sized tensor
            if x0.shape == sample.shape and not torch.is_grad_enabled() and not _shares_memory(
                    x0, sample, model_output):
                # on the CPU, copy only the held slots' values (a mask on CUDA would sync the host)
                if (sample.device.type == "cpu" and t.shape == sample.shape[:2] and x0.is_contiguous()
                        and sample.is_contiguous()):
                    rows = (t < 0).flatten()
                    x0.view(rows.numel(), -1)[rows] = sample.view(rows.numel(), -1)[rows]
                    return x0
                return torch.where(keep, sample, x0, out=x0)
            return torch.where(keep, sample, x0)
        out = self.update(x0, sample, t, t_next, noise)
        return out if self.update_keeps_clean else torch.where(keep, sample, out)

    def denoised(self, model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The x0 prediction the update uses: the model's output converted to x0, clamped to
        [-1, 1] with `clip_denoised` (every sampler's update is written in x0, so all honour it)."""
        if self.schedule.prediction == "x0":
            return model_output.clamp(-1, 1) if self.config.clip_denoised else model_output
        a, s = self.schedule.alpha_sigma(t)
        a, s = expand_like(a, sample), expand_like(s, sample)
        if self.schedule.prediction == "eps" and not torch.is_grad_enabled():
            # x0 = (x_t - s eps) / a as x_t / a - (s / a) eps: two passes over the batch, not
            # three, and one new tensor (the per-frame coefficients are [B, F] numbers)
            x0 = torch.mul(model_output, -s / a).addcmul_(sample, a.reciprocal())
        else:
            x0 = to_x0(model_output, self.schedule.prediction, sample, a, s)
        return x0.clamp(-1, 1) if self.config.clip_denoised else x0

    def update(self, x0, x_t, t, t_next, noise):  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def nfe(self) -> int:
        """Network evaluations per job (moves of the trajectory), unguided: under history guidance a
        call with history to drop costs 2 (fdm_engine/history_guidance.py, job_nfe)."""
        return len(self.trajectory()) - 1

    def half_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda = log(a / s) at t [B, F], float64; +inf where t < 0 (clean)."""
        return half_log_snr(self.schedule.alpha_bar(t))

    def coefs(self, t: torch.Tensor, like: torch.Tensor):
        """alpha-bar, a, s at t, broadcast against `like`, in its dtype."""
        ab = self.schedule.alpha_bar(t)
        return tuple(expand_like(c, like) for c in (ab, *alpha_sigma_of(ab)))


def combine(x: torch.Tensor, c_x: torch.Tensor, terms: list[torch.Tensor], coefs: list[torch.Tensor]) -> torch.Tensor:
    """c_x x + sum_k coefs[k] terms[k] with per-slot weights [B, F] (float64, cast to x's dtype):
    a sampler's step as one pass over the batch per term (a term weighted 0 everywhere is skipped),
    where the step written out term by term makes several passes per term."""
    out = torch.mul(x, expand_like(c_x, x))
    for term, c in zip(terms, coefs):
        if bool(c.any()):
            out.addcmul_(term, expand_like(c, x))
    return out


def held_or_ended(c_x: torch.Tensor, coefs: list[torch.Tensor], held: torch.Tensor,
                  ended: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Weights for `combine` with slots `held` [B, F] keeping x (1, 0, 0, ..) and slots `ended`
    taking the first term, their x0 estimate (0, 1, 0, ..): no extra pass to select them."""
    go = ~held & ~ended
    return (torch.where(go, c_x, held.to(c_x.dtype)),
            [torch.where(go, c, ended.to(c.dtype) if k == 0 else torch.zeros_like(c)) for k, c in enumerate(coefs)])


def half_log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """lambda = log(a / s) from alpha-bar; +inf where it is 1 (clean)."""
    return 0.5 * (torch.log(alpha_bar) - torch.log1p(-alpha_bar))


def _shares_memory(out: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether `out` is (a view of) one of `others`: then it must not be written in place."""
    ptr = out.untyped_storage().data_ptr()
    return any(ptr == o.untyped_storage().data_ptr() for o in others)
