"""Tools shared by the published-checkpoint formats: flag strings and key maps.

A published trainer is configured by command-line flags (argparse with defaults); its checkpoint
is a state dict whose keys and tensor layouts follow the published module tree. A format here
reads the user's flag string into the published arguments (defaults filled in by argparse's
rules, including its unique-prefix abbreviations and per-flag types where a default is None),
builds our model from them, and converts the state dict through a `KeyMap`: one `Rule` per
tensor of our model, naming the published key, the shape the published tensor must have (which
may differ from ours: a 1x1 conv for a Linear) and how to turn it into ours. Every mismatch is
an FdmError naming the file, the first offending key and both shapes (`fit_state_dict`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fdm_engine.errors import FdmError
from fdm_engine.published import fit_state_dict

# ---- flag strings -------------------------------------------------------------------------------


def str2bool(text: str) -> bool:
    """improved-diffusion's boolean flag values (yes/true/t/y/1, no/false/f/n/0)."""
    v = text.lower()
    if v in ("yes", "true", "t", "y", "1"):
        return True
    if v in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError("boolean value expected")


@dataclass(frozen=True)
class Flag:
    """One argparse argument: its default, how a value is read, and `nargs="+"` or not."""

    default: Any
    parse: Callable[[str], Any] = str
    many: bool = False


def flags_like(defaults: dict[str, Any]) -> dict[str, Flag]:
    """Flags typed the way improved-diffusion's `add_dict_to_argparser` types its defaults (a list
    default takes every word up to the next --flag, typed like its first item)."""
    out = {}
    for k, v in defaults.items():
        if isinstance(v, (list, tuple)):
            out[k] = Flag(list(v), _kind(v[0] if v else ""), many=True)
        else:
            out[k] = Flag(v, _kind(v))
    return out


def _kind(v: Any) -> Callable[[str], Any]:
    return str if v is None else str2bool if isinstance(v, bool) else type(v)


def refuse_unsupported_unet_flags(where: str, args: dict[str, Any], dash: str = "") -> None:
    """The improved-diffusion UNet settings our ports do not reproduce (FDM and RaMViD share them):
    ResBlocks without scale-shift, and a different head count on the up path. `dash` is "--" when
    `args` came from flags, "" when from a saved config."""
    if not args["use_scale_shift_norm"]:
        raise FdmError(f"{where}: {dash}use_scale_shift_norm False is not supported (fdm's ResBlocks scale-shift)")
    if args["num_heads_upsample"] not in (-1, args["num_heads"]):
        raise FdmError(f"{where}: {dash}num_heads_upsample {args['num_heads_upsample']} differs from "
                       f"{dash}num_heads {args['num_heads']}; fdm uses one head count")


def parse_flags(text: str | None, spec: dict[str, Flag], what: str) -> dict[str, Any]:
    """The published arguments a flag string sets, defaults for the rest (argparse's rules:
    `--name value` or `--name=value`, unique prefixes accepted, later flags win).

    `what` names the source in errors, e.g. "ramvid --flags".
    """
    if text is None:
        raise FdmError(f"{what} is required: the flags the checkpoint was trained with")
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as e:
        raise FdmError(f"{what}: cannot split {text!r} ({e})") from None
    args = {k: f.default for k, f in spec.items()}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise FdmError(f"{what}: expected a --flag, got {tok!r}")
        name, eq, value = tok[2:].partition("=")
        key = _resolve(name, spec, what)
        i += 1
        values = [value] if eq else []
        while not eq and i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
            if not spec[key].many:
                break
        if not values:
            raise FdmError(f"{what}: --{key} needs a value")
        try:
            parsed = [spec[key].parse(v) for v in values]
        except ValueError:
            raise FdmError(f"{what}: --{key} {' '.join(values)!r} is not a valid value "
                           f"(the default is {spec[key].default!r})") from None
        args[key] = parsed if spec[key].many else parsed[0]
    return args


def _resolve(name: str, spec: dict[str, Flag], what: str) -> str:
    if name in spec:
        return name
    hits = [k for k in spec if k.startswith(name)] if name else []
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise FdmError(f"{what}: --{name} is ambiguous ({', '.join('--' + h for h in sorted(hits))})")
    raise FdmError(f"{what}: unknown flag --{name} (the published script has none)")


# ---- state-dict conversion ------------------------------------------------------------------------


def same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Rule:
    """Our tensor `ours` comes from the published tensor `published` (of shape `shape`)."""

    ours: str
    published: str
    shape: tuple[int, ...]
    to_ours: Callable[[torch.Tensor], torch.Tensor] = same


@dataclass
class KeyMap:
    """The rules for every tensor of one model; `convert` applies them to a published state dict."""

    rules: list[Rule] = field(default_factory=list)
    ignored: tuple[str, ...] = ()  # published keys that carry no weights we use (exact names)

    def add(self, ours: str, published: str, shape, to_ours=same) -> None:
        self.rules.append(Rule(ours, published, tuple(int(s) for s in shape), to_ours))

    def expected(self) -> dict[str, tuple[int, ...]]:
        return {r.published: r.shape for r in self.rules}

    def convert(self, state: dict[str, Any], src: Path | str, what: str) -> dict[str, torch.Tensor]:
        """Our state dict from the published `state` (FdmError naming `src`, the first offending
        published key and both shapes on any mismatch; `what` names the model, e.g. "the model
        the --flags describe")."""
        names = {r.ours: r.published for r in self.rules}
        state = {k: v for k, v in state.items() if k not in self.ignored}
        fitted = fit_state_dict(Path(src), _Shapes({r.ours: r.shape for r in self.rules}), state,
                                names.__getitem__, what)
        return {r.ours: r.to_ours(fitted[r.ours]).contiguous() for r in self.rules}


class _Shapes(dict):
    """Our keys with the published shapes, in the form `fit_state_dict` reads a model."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.empty(s, device="meta") for k, s in self.items()}


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`state` without `prefix` on its keys when every key has it (DataParallel's "module.")."""
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def conv1x1_to_linear(t: torch.Tensor) -> torch.Tensor:
    """A 1x1 (x1) conv weight [out, in, 1, ...] as the Linear weight [out, in]."""
    return t.reshape(t.shape[0], t.shape[1])
