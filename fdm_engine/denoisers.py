"""Where a denoiser comes from: a checkpoint file or an `oracle:` spec, behind one call."""

from __future__ import annotations

from pathlib import Path

from fdm_engine.checkpoint import LoadedDenoiser, load_checkpoint
from fdm_engine.diffusion.schedule import DiffusionConfig, NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec


def is_oracle(spec: str) -> bool:
    return str(spec).startswith("oracle:")


def load_denoiser(spec: str, device="cpu", use_ema: bool = True, published: str | None = None,
                  flags: str | None = None, config_file=None) -> LoadedDenoiser:
    """A checkpoint path (.safetensors or .pt: ours, or one a published codebase wrote that
    fdm_engine.published recognises) or 'oracle:<kernel>[:key=value,...]'. `published`, `flags`
    and `config_file` are `--from`, `--flags`, `--config` for a published checkpoint."""
    given = [flag for flag, value in (("--from", published), ("--flags", flags), ("--config", config_file)) if value]
    if is_oracle(spec):
        if given:
            one = len(given) == 1
            raise FdmError(f"{spec}: {' and '.join(given)} {'is' if one else 'are'} for published checkpoints, "
                           f"not the oracle: leave {'it' if one else 'them'} out")
        # x0, its native prediction: no eps round trip (two passes over every batch) in the oracle
        # and again in the sampler
        diffusion = DiffusionConfig(prediction="x0")
        model = GaussianProcessOracle(parse_oracle_spec(spec), NoiseSchedule(diffusion)).to(device)
        return LoadedDenoiser(model=model, diffusion=diffusion, model_name="oracle", extra={},
                              path=Path(spec), used_ema=False)
    if not Path(spec).exists():  # before its suffix: a mistyped path is what the user needs to hear of
        raise FdmError(f"{spec}: no such file (MODEL: a checkpoint .safetensors or .pt, or an oracle: spec)")
    from fdm_engine.published import detect_format, load_published

    if given:
        if published is None and detect_format(spec) is None:
            raise FdmError(f"{spec}: --flags and --config describe a published checkpoint: pass --from NAME too")
        return load_published(spec, published, flags, config_file, device=device)
    published = detect_format(spec)
    if published is not None:
        return load_published(spec, published, device=device)
    return load_checkpoint(spec, device=device, use_ema=use_ema)


def default_clip_denoised(loaded: LoadedDenoiser) -> bool:
    """Whether samplers clamp x0 predictions to [-1, 1] unless told: yes for trained models (every
    dataset is served in [-1, 1], and the published samplers clamp by default), no for the oracle,
    whose Gaussian data is unbounded (clamping would break its exact scores)."""
    return loaded.model_name != "oracle"
