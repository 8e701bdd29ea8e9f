"""SampleConfig: every setting of a sampling run, its defaults, and their validation.

This is the one place sampling defaults are stated: `fdm sample`'s options, `fdm eval`'s sampler
options, the training-time sampler and `make_sampler` read them from here. A bad value is refused
when the config is made (`__post_init__`), with one line naming the flag and the value.
"""

from __future__ import annotations

import dataclasses
import math

from fdm_engine.config import Config
from fdm_engine.errors import FdmError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 64 bits


@dataclasses.dataclass(frozen=True)
class SampleConfig(Config):
    model: str = ""
    # a checkpoint a published codebase wrote (fdm_engine/published): its format and settings
    published_format: str | None = None  # --from (None: recognised from the file)
    published_flags: str | None = None  # --flags
    published_config: str | None = None  # --config FILE.yaml
    scheme: str = "hierarchy-2"
    # 36 given frames is FDM's evaluation setting (`fdm schemes` and `fdm eval scheme` plan an
    # unconditional start instead, n_obs = 0, since they need no video).
    n_obs: int = 36
    length: int | None = None  # default: the conditioning videos' length
    max_frames: int | None = None  # default: the model's K (20 for the oracle)
    step_size: int | None = None  # default: max_frames // 2
    # DPM-Solver++(2M), 10 steps on the measured 'optimised' log-SNR profile: on the oracle it beats
    # DDPM's 1000 steps on every setting tried and logsnr at 25 steps on all of them (README, "How
    # many steps do I need"; tests/test_sampler_schedules.py checks it on three settings).
    sampler: str = "dpm++2m"
    steps: int = 10
    spacing: str = "optimised"
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 DDPM-like
    clip_denoised: bool | None = None  # None: the model's default (denoisers.default_clip_denoised)
    history_guidance: float = 0.0  # W of history guidance (fdm_engine/history_guidance.py); 0 = off
    history_drop: str = "all"  # which history the reduced prediction drops: all | keep-nearest:N
    num_videos: int = 1
    batch_size: int = 0  # 0: 2 on CPU (measured best there), 32 on GPU
    videos_in_flight: int = 0  # 0: enough videos to fill the batches (= the batch size)
    seed: int = 0
    obs: str | None = None
    data_dir: str | None = None
    formats: tuple[str, ...] = ("mp4", "npz", "png")
    save_raw: bool = False
    fps: int = 10
    # per-frame schemes (docs/perframe.md); one a scheme does not read is refused (LEVEL_FIELDS)
    uncertainty_scale: float = 1.0
    partitions: int = 0  # fifo: 0 = the fewest with <= K frames per call
    lookahead: bool = False
    block_size: int = 1
    ar_step: int = 1
    context_noise: float | None = None  # observed frames shown at this timestep (None: clean)
    precision: str = "auto"  # network autocast: auto = bf16 on CUDA, CPU: see precision.py
    device: str = "auto"  # auto = cuda:LOCAL_RANK when available, else cpu

    def __post_init__(self):
        for problem in _problems(self):
            raise FdmError(problem)

    # Fields that may differ between a run and its resumption (they do not change the frames).
    RESUME_FREE = ("formats", "save_raw", "fps", "batch_size", "videos_in_flight")


# The per-frame schemes' settings (sampling_schemes.levels.LevelOptions, besides steps).
LEVEL_FIELDS = ("uncertainty_scale", "partitions", "lookahead", "block_size", "ar_step")


def flag(field: str) -> str:
    return "--format" if field == "formats" else "--" + field.replace("_", "-")


def _at_least(cfg, field: str, low: int, optional: bool = False):
    v = getattr(cfg, field)
    if optional and v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        return f"{flag(field)} {v!r}: must be an integer >= {low}"
    return None


def _problems(cfg: SampleConfig):
    """Yields the first problems found, cheapest checks first."""
    for field, low, optional in (("n_obs", 0, False), ("length", 1, True), ("max_frames", 2, True),
                                 ("step_size", 1, True), ("steps", 1, False), ("num_videos", 1, False),
                                 ("batch_size", 0, False), ("videos_in_flight", 0, False), ("fps", 1, False)):
        if (p := _at_least(cfg, field, low, optional)) is not None:
            yield p
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < SEED_LIMIT:
        yield f"--seed {cfg.seed!r}: must be an integer in [0, 2**64)"
    if not isinstance(cfg.eta, (int, float)) or not math.isfinite(cfg.eta) or cfg.eta < 0:
        yield f"--eta {cfg.eta!r}: must be a finite number >= 0"
    if cfg.context_noise is not None and (not isinstance(cfg.context_noise, (int, float))
                                          or not math.isfinite(cfg.context_noise) or cfg.context_noise < 0):
        yield f"--context-noise {cfg.context_noise!r}: must be a timestep >= 0"
    yield from _history_problems(cfg)
    if cfg.precision not in PRECISIONS:
        yield f"--precision {cfg.precision!r}: choose from {', '.join(PRECISIONS)}"
    if cfg.device != "auto":
        yield from _device_problem(cfg.device)
    yield from _registry_problems(cfg)


# Context noise shows the history as noised latent slots, not `observed` ones: history guidance
# would find no history to drop and silently be the unguided model (docs/denoiser.md).
CONTEXT_HIDES_HISTORY = "the history then reaches the model as noised frames, not observed ones, so there is none to guide by; use one of them"


def _history_problems(cfg: SampleConfig):
    from fdm_engine.history_guidance import check_weight, parse_drop

    for check, value in ((check_weight, cfg.history_guidance), (parse_drop, cfg.history_drop)):
        try:
            check(value)
        except FdmError as e:
            yield str(e)
    if (p := drop_without_guidance(cfg.history_guidance, cfg.history_drop)) is not None:
        yield p
    if cfg.history_guidance and cfg.context_noise is not None:
        yield f"--history-guidance with --context-noise {cfg.context_noise:g}: {CONTEXT_HIDES_HISTORY}"


def drop_without_guidance(weight: float, drop: str) -> str | None:
    """The refusal of a --history-drop that nothing uses (history guidance off), or None."""
    if drop != option_default("history_drop") and not weight:
        return (f"--history-drop {drop}: has no effect without --history-guidance W (W > 0); "
                f"add one or leave out --history-drop")
    return None


def _device_problem(device: str):
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        yield f"--device {device!r}: not a device (auto, cpu, cuda, cuda:N)"


def _registry_problems(cfg: SampleConfig):
    from fdm_engine.diffusion.spacing import SPACINGS, is_spacing_file, read_timesteps
    from fdm_engine.samplers import SAMPLERS
    from fdm_engine.writer import OUTPUT_FORMATS
    from sampling_schemes import get_scheme
    from sampling_schemes.registry import unused_option_problems

    if not cfg.formats:
        yield f"--format {','.join(cfg.formats)!r}: name at least one of {', '.join(OUTPUT_FORMATS.names())}"
    bad = [f for f in cfg.formats if f not in OUTPUT_FORMATS]
    if bad:
        yield f"--format {','.join(bad)} unknown (choose from {', '.join(OUTPUT_FORMATS.names())})"
    get_scheme(cfg.scheme)  # FdmError naming the known schemes
    yield from unused_option_problems(cfg.scheme, **{f: getattr(cfg, f) for f in LEVEL_FIELDS})
    SAMPLERS.get(cfg.sampler)
    if not is_spacing_file(cfg.spacing):  # a FILE.json of timesteps is read (and checked) with the schedule
        SPACINGS.get(cfg.spacing)
    elif cfg.steps != option_default("steps"):  # the file sets the steps: a different --steps contradicts it
        try:
            n = len(read_timesteps(cfg.spacing))
        except FdmError:
            n = cfg.steps  # a bad file is reported when the sampler reads it (with the schedule)
        if n != cfg.steps:
            yield (f"--steps {cfg.steps} with --spacing {cfg.spacing}: the file holds {n} timesteps, which set "
                   f"the steps; leave out --steps")


def option_default(field: str):
    """The default of a SampleConfig field (for CLI options)."""
    return next(f.default for f in dataclasses.fields(SampleConfig) if f.name == field)
