"""From what the user said to the complete TrainConfig of a run (and back from a run folder)."""

from __future__ import annotations

from pathlib import Path

from fdm_engine.errors import FdmError
from trainers.base import TRAINERS
from trainers.config import (
    DEFAULTS,
    RESUME_FREE,
    TRAINER_OPTIONS,
    TrainConfig,
    check,
    merge,
    set_fields,
)
from trainers.presets import get_preset, model_of_preset

CONFIG_FILE = "config.json"


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill every unset field (DEFAULTS < trainer defaults < preset < cfg) and check the result."""
    model = _model_name(cfg)
    trainer = TRAINERS.get(model)
    preset = get_preset(model, cfg.preset or trainer.dataset_presets.get(cfg.dataset, "tiny"))
    for option in TRAINER_OPTIONS:
        if getattr(cfg, option) is not None and option not in trainer.options:
            users = sorted(n for n in TRAINERS.names() if option in TRAINERS.get(n).options)
            raise FdmError(f"--{option.replace('_', '-')} applies to --model {' or '.join(users)}, not {model}")
    base = TrainConfig.from_dict({**DEFAULTS, **trainer.defaults, **preset.train})
    merged = merge(base, cfg)
    dataset = merged.dataset
    if not dataset:
        raise FdmError(f"--dataset is required (preset {preset.name!r} names none)")
    model_config = trainer.model_config(merged, {**preset.model_config(), **_current_names(model, cfg.model_config)})
    model_config = _checked_model_config(model, model_config)
    resolved = merged.replace(
        model=model, preset=preset.name, model_config=model_config,
        clip_length=trainer.resolved_clip_length(merged, model_config),
        run_dir=merged.run_dir or _default_run_dir(dataset, model, preset.name),
        **{o: model_config.get(o, getattr(merged, o)) for o in trainer.options if o in model_config},
    )
    check(resolved)
    return resolved


def resolve_for_run_dir(cfg: TrainConfig) -> tuple[TrainConfig, bool]:
    """The config of the run in cfg's run folder: a new run's resolved config, or an existing
    run's saved config with the user's resume-free changes. Returns (config, resuming).

    Settings given explicitly that differ from the saved run's raise FdmError naming them.
    """
    run_dir = cfg.run_dir or resolve(cfg).run_dir  # `--run-dir DIR` alone resumes DIR's run
    saved_file = Path(run_dir) / CONFIG_FILE
    if not saved_file.is_file():
        return resolve(cfg), False
    try:
        saved = TrainConfig.from_json(saved_file.read_text())
    except (ValueError, TypeError, FdmError) as e:
        raise FdmError(f"{saved_file}: not a readable run config ({e})") from None
    given = set_fields(cfg)
    changed = sorted(k for k, v in given.items()
                     if k not in RESUME_FREE and k != "model_config" and getattr(saved, k) != v)
    if given.get("model_config") and {**saved.model_config, **given["model_config"]} != saved.model_config:
        changed.append("model_config")
    if changed:
        detail = ", ".join(f"{k}: {getattr(saved, k)!r} -> {given[k]!r}" for k in changed)
        raise FdmError(f"{run_dir} holds a run with other settings ({detail}); resume it without "
                       f"them or choose another --run-dir")
    free = {k: v for k, v in given.items() if k in RESUME_FREE}
    return resolve(merge(saved, TrainConfig.from_dict(free))), True


def _default_run_dir(dataset: str, model: str, preset: str) -> str:
    """runs/{dataset}-{preset}, with the model named when the preset does not name it."""
    name = preset if preset.startswith(model) else f"{model}-{preset}"
    return str(Path("runs") / f"{dataset}-{name}")


def _model_name(cfg: TrainConfig) -> str:
    owner = model_of_preset(cfg.preset) if cfg.preset else None
    if cfg.model and owner and owner != cfg.model:
        raise FdmError(f"--preset {cfg.preset} is a preset of --model {owner}, not {cfg.model}")
    return cfg.model or owner or "fdm"


def _current_names(model: str, model_config: dict) -> dict:
    """The user's model config overrides under the fields' current names (e.g. ssm_version -> ssm_mix),
    so they replace the preset's value rather than sit beside it."""
    from fdm_engine.models import MODELS

    return MODELS.get(model).Config.current_names(model_config)


def _checked_model_config(model: str, model_config: dict) -> dict:
    """The model config completed and validated by the model's Config class."""
    from fdm_engine.models import MODELS

    cls = MODELS.get(model)
    try:
        return cls.Config.from_dict(model_config).to_dict()
    except TypeError as e:
        raise FdmError(f"model config for {model}: {e}") from None
