"""Named presets: a model config plus training settings, per model.

`--preset NAME` picks one; "tiny" exists for every model and is sized for a laptop CPU, the others
reproduce the settings the seed READMEs document (`fdm-carla`, `ssm-ucf101-32`, ...). A preset
name is unique across models except "tiny", so `--preset fdm-carla` also picks `--model fdm`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fdm_engine.errors import FdmError


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    model: str  # trainer / model registry name
    about: str  # one line: where the numbers come from
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig fields
    model_preset: str = ""  # the model's own preset (fdm_engine.models.model_preset); default: name
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def model_config(self) -> dict[str, Any]:
        """The model config dict: the model's preset with this preset's overrides."""
        from fdm_engine.models import model_preset

        base = model_preset(self.model, self.model_preset or self.name).to_dict()
        return {**base, **self.model_overrides}


PRESETS: dict[str, dict[str, Preset]] = {}  # model -> name -> Preset


def register_preset(preset: Preset) -> Preset:
    taken = [m for m, named in PRESETS.items() if preset.name in named and m != preset.model]
    if taken and preset.name != "tiny":
        raise ValueError(f"preset {preset.name!r} already belongs to model {taken[0]!r}")
    PRESETS.setdefault(preset.model, {})[preset.name] = preset
    return preset


def get_preset(model: str, name: str) -> Preset:
    """The preset `name` of `model`; FdmError lists the model's presets otherwise."""
    named = PRESETS.get(model, {})
    if name not in named:
        owner = model_of_preset(name, required=False)
        hint = f"; {name!r} is a preset of --model {owner}" if owner else ""
        raise FdmError(f"unknown preset {name!r} for --model {model} (known: {', '.join(sorted(named))}){hint}")
    return named[name]


def model_of_preset(name: str, required: bool = True) -> str | None:
    """The model a preset name belongs to (None for "tiny", which every model has)."""
    owners = [m for m, named in PRESETS.items() if name in named]
    if len(owners) == 1 and name != "tiny":
        return owners[0]
    if not owners and required:
        known = sorted({n for named in PRESETS.values() for n in named})
        raise FdmError(f"unknown preset {name!r} (known: {', '.join(known)})")
    return None


def preset_table() -> list[Preset]:
    """Every preset, by model then name (for `fdm train --list-presets`)."""
    return [PRESETS[m][n] for m in sorted(PRESETS) for n in sorted(PRESETS[m])]
