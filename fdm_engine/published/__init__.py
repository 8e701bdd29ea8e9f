"""Checkpoints written by the published codebases (FDM, RaMViD, SSM, video_diffusion), read safely
and turned into our models, so `fdm sample` and `fdm convert` take the files users already have.

A format is one object registered in PUBLISHED_FORMATS under the name `fdm convert --from NAME`
takes. It subclasses `PublishedFormat` and implements

    read(path, flags, config_file) -> LoadedPublished

- `path`: the user's file. Read it only with `load_pickle(path)` (torch.load(weights_only=True):
  tensors and plain containers; a pickle that needs anything else is refused, nothing runs).
- `flags`: the `--flags "..."` string (the published training script's arguments) or None;
  `keymap.parse_flags(flags, spec, what)` turns it into the published arguments by argparse's
  rules (`keymap.flags_like(defaults)` types a spec like the published defaults).
- `config_file`: the `--config FILE.yaml` path or None.
- Set the class attributes `needs = "flags"` or `"config"` (checked before `read` is called, with
  `needs_hint` in the message) and `description` (one line for `--help`); override
  `detect(obj) -> bool` when a loaded pickle can be recognised without flags (then `fdm sample`
  and `fdm convert` take it with no --from).

`LoadedPublished` holds our registry model name and its config dict, the state dict in *our* key
names and shapes, our DiffusionConfig, the calling conventions of the published code (recorded in
the converted file under extra["published"]), `extra` (dataset, step, ... as our trainers record
them) and one-line `notes` shown to the user once. Build the state dict with
`fit_state_dict(path, model, published_state, to_published)`: it renames the published tensors to
our keys and names the first missing, unexpected or wrong-shape key (published name, both shapes).

A new format is one module here with its class and `PUBLISHED_FORMATS.register("name", Cls())`,
plus one import line at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fdm_engine.checkpoint import LoadedDenoiser, check_suffix, read_torch_file, save_checkpoint
from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models import build_model
from fdm_engine.registry import Registry

NEEDS = (None, "flags", "config")


@dataclasses.dataclass
class LoadedPublished:
    """A published checkpoint translated into our terms (see the module doc)."""

    model_name: str  # our registry name (fdm_engine.models.MODELS)
    model_config: dict[str, Any]  # our model's Config as a dict
    state_dict: dict[str, torch.Tensor]  # our key names and shapes
    diffusion: DiffusionConfig
    conventions: dict[str, Any] = dataclasses.field(default_factory=dict)  # how the published code called the net
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # dataset, step, ... (plain JSON values)
    notes: list[str] = dataclasses.field(default_factory=list)  # one line each, shown once
    used_ema: bool = False


class PublishedFormat:
    """One published checkpoint format; subclass it and register an instance."""

    needs: str | None = None  # "flags" | "config" | None
    needs_hint: str = ""  # what to pass, e.g. '--flags "--image_size 64 ..."'
    description: str = ""

    def detect(self, obj: Any) -> bool:
        """True when `obj` (a loaded pickle) is certainly a file of this format."""
        return False

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        raise NotImplementedError


PUBLISHED_FORMATS: Registry[PublishedFormat] = Registry("published checkpoint format", group="fdm.published_formats")


# ---------------------------------------------------------------------------------------------
# Helpers for format readers


def load_pickle(path: Path) -> Any:
    """The object in a .pt file, loaded with torch.load(weights_only=True) (memory-mapped)."""
    path = Path(path)
    if not path.exists():
        raise FdmError(f"{path}: no such file")
    if not path.is_file():
        raise FdmError(f"{path}: not a file")
    return read_torch_file(path, mmap=True)


def fit_state_dict(path: Path, model: nn.Module, published: dict[str, Any],
                   to_published: Callable[[str], str], what: str = "the model its settings describe",
                   ) -> dict[str, torch.Tensor]:
    """The published tensors under our keys, checked against `model.state_dict()`.

    `to_published(our_key)` gives the published name of each of our keys. The first problem
    (a missing key, an unexpected one, a wrong shape, a non-tensor) is an FdmError naming the
    published key and both shapes.
    """
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    names = {to_published(k): k for k in ours}
    expected = {p: ours[k] for p, k in names.items()}
    for key, value in published.items():
        if key not in expected:
            raise FdmError(f"{path}: unexpected key {key!r} (not in {what}; {len(expected)} keys expected)")
        if not isinstance(value, torch.Tensor):
            raise FdmError(f"{path}: {key!r} holds a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != expected[key]:
            raise FdmError(f"{path}: {key!r} has shape {list(value.shape)} in the file but "
                           f"{list(expected[key])} in {what}")
    missing = [p for p in expected if p not in published]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FdmError(f"{path}: missing key {missing[0]!r}{more} (expected by {what}, "
                       f"shape {list(expected[missing[0]])})")
    return {names[p]: v for p, v in published.items()}


# ---------------------------------------------------------------------------------------------
# Entry points used by `fdm sample` / `fdm convert`


def get_format(name: str) -> PublishedFormat:
    if name not in PUBLISHED_FORMATS:
        raise FdmError(f"--from {name!r}: unknown checkpoint format (known: "
                       f"{', '.join(PUBLISHED_FORMATS.names())})")
    return PUBLISHED_FORMATS.get(name)


def detect_format(path) -> str | None:
    """The name of the published format `path` holds when it can be told from the file alone,
    else None (native fdm checkpoints, .safetensors files, formats that need --flags)."""
    path = Path(path)
    if path.suffix != ".pt" or not path.is_file():
        return None
    obj = load_pickle(path)
    if isinstance(obj, dict) and "fdm_format" in obj:
        return None
    for name in PUBLISHED_FORMATS.names():
        if PUBLISHED_FORMATS.get(name).detect(obj):
            return name
    return None


def read_published(path, name: str, flags: str | None = None, config_file=None) -> LoadedPublished:
    """Read `path` as published format `name` (flags / config as `fdm convert` takes them)."""
    path = Path(path)
    fmt = get_format(name)
    assert fmt.needs in NEEDS, f"{name}: bad `needs` {fmt.needs!r}"
    if fmt.needs == "flags" and not flags:
        raise FdmError(f"{path}: --from {name} needs --flags with the arguments it was trained with, "
                       f"e.g. {fmt.needs_hint}")
    if fmt.needs == "config" and config_file is None:
        raise FdmError(f"{path}: --from {name} needs --config FILE.yaml, the config it was trained with"
                       + (f" ({fmt.needs_hint})" if fmt.needs_hint else ""))
    if config_file is not None:
        config_file = Path(config_file)
        if not config_file.is_file():
            raise FdmError(f"--config {config_file}: no such file")
    return fmt.read(path, flags, config_file)


def build_published(path, loaded: LoadedPublished, name: str, device="cpu") -> LoadedDenoiser:
    """Our model with the published weights, in eval mode, as `load_checkpoint` returns one."""
    path = Path(path)
    try:
        model = build_model(loaded.model_name, loaded.model_config)
    except FdmError as e:
        raise FdmError(f"{path}: {e}") from None
    model.load_state_dict(loaded.state_dict, strict=True)
    model.to(device).eval()
    return LoadedDenoiser(model=model, diffusion=loaded.diffusion, model_name=loaded.model_name,
                          extra=_extra(path, loaded, name), path=path, used_ema=loaded.used_ema)


def load_published(path, name: str | None = None, flags: str | None = None, config_file=None,
                   device="cpu", notify: Callable[[str], None] | None = None) -> LoadedDenoiser:
    """Read and build a published checkpoint (format detected when `name` is None); notes go to
    `notify` (stderr by default), once."""
    path = Path(path)
    name = name or detect_format(path)
    if name is None:
        raise FdmError(f"{path}: not a checkpoint format fdm recognises; pass --from "
                       f"({', '.join(PUBLISHED_FORMATS.names())})")
    loaded = read_published(path, name, flags, config_file)
    _notify(loaded, notify)
    return build_published(path, loaded, name, device=device)


def convert_published(src, dst, name: str | None = None, flags: str | None = None, config_file=None,
                      notify: Callable[[str], None] | None = None) -> LoadedDenoiser:
    """Write the published checkpoint `src` as our checkpoint `dst` (.safetensors or .pt): our
    model's weights, bit-exact, plus the diffusion settings and conventions in the metadata."""
    check_suffix(dst)  # before reading
    loaded = load_published(src, name, flags, config_file, notify=notify)
    save_checkpoint(dst, loaded.model, loaded.diffusion, extra=loaded.extra)
    return loaded


def _extra(path: Path, loaded: LoadedPublished, name: str) -> dict[str, Any]:
    published = {"format": name, "source": path.name, "conventions": loaded.conventions,
                 "notes": loaded.notes}
    return {**loaded.extra, "published": published}


def _notify(loaded: LoadedPublished, notify: Callable[[str], None] | None) -> None:
    say = notify or (lambda line: print(line, file=sys.stderr))
    for note in loaded.notes:
        say(f"note: {note}")


# Formats: each module registers its format in PUBLISHED_FORMATS (one line per format).
from fdm_engine.published import fdm, ramvid, ssm, video_diffusion  # noqa: E402,F401
