"""Frozen config dataclasses that round-trip through JSON (and so through checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import numbers
import typing
from typing import Any, TypeVar

from fdm_common.errors import FdmError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for component configs: fields are the constructor's arguments.

    `RENAMED` maps a field's former name to its current one, so dicts written under the old name
    (checkpoint metadata, run configs, what users type) still load.
    """

    RENAMED = {}  # old field name -> current field name (a class attribute, not a field)

    @classmethod
    def current_names(cls, d: dict[str, Any]) -> dict[str, Any]:
        """`d` with former field names replaced by the current ones."""
        return {cls.RENAMED.get(k, k): v for k, v in d.items()}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        d = cls.current_names(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FdmError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in d.items():
            # JSON has no tuples; restore them where the field is declared as one.
            if isinstance(v, list) and "tuple" in str(hints.get(k, "")).lower():
                v = tuple(v)
            kwargs[k] = _checked_number(cls.__name__, k, v, hints.get(k))
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[C], s: str) -> C:
        return cls.from_dict(json.loads(s))

    def replace(self: C, **changes) -> C:
        return dataclasses.replace(self, **changes)


_NUMBERS = {int: (numbers.Integral, "an integer"), float: (numbers.Real, "a number")}


def _checked_number(owner: str, name: str, value: Any, hint: Any) -> Any:
    """`value` if it fits a numeric field (int, float, or one of them | None), else FdmError: a
    value typed by hand (--model-option base_channels=abc, --param num_balls=abc) or read from a
    file stops here with its name, not deep inside the model as a TypeError or ValueError."""
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    if len(kinds) != 1 or kinds[0] not in _NUMBERS or (value is None and type(None) in typing.get_args(hint)):
        return value
    accepted, words = _NUMBERS[kinds[0]]
    if kinds[0] is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, accepted) or isinstance(value, bool):
        raise FdmError(f"{owner}: {name} must be {words} (got {value!r})")
    return value


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Config):
        return v.to_dict()
    return v
