"""Noise samplers, selectable by name; users add theirs with `SAMPLERS.register(name, cls)` or
the entry-point group `fdm.samplers`. `run_job` drives one (batched) denoising job."""

from fdm_engine.registry import Registry
from fdm_engine.samplers.base import Sampler, SamplerConfig
from fdm_engine.samplers.ddim import DDIMSampler
from fdm_engine.samplers.ddpm import DDPMSampler, DDPMSmallSampler
from fdm_engine.samplers.dpmpp import DPMSolverPP2MSampler, DPMSolverPP2MSDESampler, DPMSolverPP3MSampler
from fdm_engine.samplers.heun import HeunSampler
from fdm_engine.samplers.unipc import UniPC2Sampler, UniPCSampler

SAMPLERS: Registry = Registry("sampler", group="fdm.samplers")
SAMPLERS.register("ddpm", DDPMSampler)
SAMPLERS.register("ddpm-small", DDPMSmallSampler)
SAMPLERS.register("ddim", DDIMSampler)
SAMPLERS.register("dpm++2m", DPMSolverPP2MSampler)
SAMPLERS.register("dpm++3m", DPMSolverPP3MSampler)
SAMPLERS.register("dpm++2m-sde", DPMSolverPP2MSDESampler)
SAMPLERS.register("unipc", UniPCSampler)
SAMPLERS.register("unipc-2", UniPC2Sampler)
SAMPLERS.register("heun", HeunSampler)


def make_sampler(name: str, schedule, steps: int | None = None, spacing: str | None = None,
                 eta: float | None = None, clip_denoised: bool = False) -> Sampler:
    """A configured sampler; unset settings take SamplerConfig's (= SampleConfig's) defaults."""
    given = {"steps": steps, "spacing": spacing, "eta": eta}
    return SAMPLERS.get(name)(schedule, SamplerConfig(**{k: v for k, v in given.items() if v is not None},
                                                      clip_denoised=clip_denoised))


from fdm_engine.samplers.denoise import run_job  # noqa: E402  (needs Sampler defined above)

__all__ = ["SAMPLERS", "Sampler", "SamplerConfig", "make_sampler", "run_job",
           "DDPMSampler", "DDPMSmallSampler", "DDIMSampler", "DPMSolverPP2MSampler", "DPMSolverPP3MSampler",
           "DPMSolverPP2MSDESampler", "UniPCSampler", "UniPC2Sampler", "HeunSampler"]
