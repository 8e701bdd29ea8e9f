"""Checkpoints: weights plus everything needed to rebuild the model, in one file.

Two formats, chosen by suffix, holding the same content:

* `.safetensors` (native): tensors under `model.<key>` (and `ema.<key>` when EMA weights were
  saved); the string metadata holds `fdm_format` ("1"), `model` (registry name), and
  `model_config`, `diffusion`, `extra` as JSON.
* `.pt`: read only through `torch.load(weights_only=True)`, so nothing in the file can run code. A
  dict `{"fdm_format": 1, "model": name, "model_config": dict, "diffusion": dict, "extra": dict,
  "state_dict": {key: tensor}, "ema": {key: tensor}}` ("ema" absent when there is none).

Loading rebuilds the model from the file alone and checks keys and shapes strictly. Every problem
with a file (missing, corrupt, truncated, unsafe, not matching its own config) is an FdmError whose
one-line message names the file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.files import atomic_write
from fdm_engine.models import build_model, model_name

FORMAT_VERSION = 1
SUFFIXES = (".safetensors", ".pt")
_META_KEYS = ("fdm_format", "model", "model_config", "diffusion", "extra")
_SHOW = 3  # offending keys named in a mismatch message


@dataclasses.dataclass
class LoadedDenoiser:
    """A denoiser ready to sample, in eval mode: a model rebuilt from a checkpoint (with the
    weights the caller asked for), or the oracle (`fdm_engine.denoisers.load_denoiser`; its
    `path` is the spec). `diffusion` is the noise process it was trained for."""

    model: nn.Module
    diffusion: DiffusionConfig
    model_name: str
    extra: dict[str, Any]
    path: Path
    used_ema: bool


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file holds, without the weights (returned by `convert_checkpoint`)."""

    path: Path
    model_name: str
    model_config: dict[str, Any]
    diffusion: DiffusionConfig
    extra: dict[str, Any]
    num_weights: int  # tensors under `model.`
    has_ema: bool


@dataclasses.dataclass
class _Raw:
    """A checkpoint as read from or written to disk, independent of the format.

    meta: the _META_KEYS, configs as dicts; tensors: `model.<key>` / `ema.<key>` -> tensor.
    """

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Public API


def save_checkpoint(path, model: nn.Module, diffusion: DiffusionConfig,
                    ema_state: dict[str, torch.Tensor] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (a registered model), its diffusion config, optional EMA weights and `extra`.

    `ema_state` is the state_dict of the EMA copy of the model (same keys and shapes as
    `model.state_dict()`). `extra` holds plain JSON values (step, dataset name, ...). The format
    follows the suffix. The write is atomic: `path` holds either the old file or the new one.
    """
    path = Path(path)
    _writer(path)  # reject a bad suffix before doing any work
    try:
        name = model_name(model)
    except KeyError:
        raise FdmError(f"{path}: cannot save a {type(model).__name__}: it is not registered in "
                       "fdm_engine.models.MODELS (unwrap DDP / torch.compile wrappers first)") from None
    weights = model.state_dict()
    tensors = {f"model.{k}": v for k, v in weights.items()}
    if ema_state is not None:
        _check_shapes(path, _shapes(weights), _shapes(ema_state),
                      "ema_state does not match model.state_dict()")
        tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    meta = {
        "fdm_format": FORMAT_VERSION,
        "model": name,
        "model_config": _json_plain(path, "model config", model.config.to_dict()),
        "diffusion": diffusion.to_dict(),
        "extra": _json_plain(path, "extra", extra or {}),
    }
    _write_atomic(path, _Raw(meta, {k: _standalone(v) for k, v in tensors.items()}))
    return path


def load_checkpoint(path, device="cpu", use_ema: bool = True) -> LoadedDenoiser:
    """Rebuild the model saved at `path` and load its weights (EMA ones when present and use_ema).

    Raises FdmError when the file is missing, corrupt, unsafe, or its weights do not match the
    model its metadata describes.
    """
    path = Path(path)
    raw, model, diffusion = _read_checked(path)
    weights, ema = _split(raw.tensors)
    used_ema = use_ema and bool(ema)
    model.load_state_dict(ema if used_ema else weights, strict=True)
    model.to(device).eval()
    return LoadedDenoiser(model=model, diffusion=diffusion, model_name=raw.meta["model"],
                            extra=raw.meta["extra"], path=path, used_ema=used_ema)


def convert_checkpoint(src, dst) -> CheckpointInfo:
    """Copy the checkpoint `src` to `dst`, formats chosen by suffix; every tensor bit-exact.

    `src` is checked like `load_checkpoint` does (the model must be registered) so a file that
    would not load is never written.
    """
    src, dst = Path(src), Path(dst)
    _writer(dst)  # reject a bad suffix before reading
    raw, _, diffusion = _read_checked(src)
    weights, ema = _split(raw.tensors)
    _write_atomic(dst, raw)
    return CheckpointInfo(path=dst, model_name=raw.meta["model"], model_config=raw.meta["model_config"],
                          diffusion=diffusion, extra=raw.meta["extra"], num_weights=len(weights),
                          has_ema=bool(ema))


# ---------------------------------------------------------------------------------------------
# Building and checking


def _read_checked(path: Path) -> tuple[_Raw, nn.Module, DiffusionConfig]:
    """Read `path`, rebuild its model, and check its weights (and EMA weights) against it."""
    raw = _read(path)
    model, diffusion = _build(path, raw.meta)
    weights, ema = _split(raw.tensors)
    expected = _shapes(model.state_dict())
    described = f"the model its metadata describes ({raw.meta['model']!r})"
    _check_shapes(path, expected, _shapes(weights), f"weights do not match {described}")
    if ema:
        _check_shapes(path, expected, _shapes(ema), f"EMA weights do not match {described}")
    return raw, model, diffusion


def _build(path: Path, meta: dict[str, Any]) -> tuple[nn.Module, DiffusionConfig]:
    """The model and diffusion config the metadata describes; config errors name the file."""
    try:
        model = build_model(meta["model"], meta["model_config"])
        diffusion = DiffusionConfig.from_dict(meta["diffusion"])
    except FdmError as e:
        raise FdmError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:  # a config field of the wrong type
        raise FdmError(f"{path}: invalid model or diffusion config in the metadata: "
                       f"{_first_line(e)}") from None
    return model, diffusion


def _split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`model.`/`ema.` keys -> (weights, ema); a key with neither prefix stays whole among the
    weights, where the strict check reports it as unexpected."""
    weights, ema = {}, {}
    for k, v in tensors.items():
        if k.startswith("ema."):
            ema[k[len("ema."):]] = v
        else:
            weights[k.removeprefix("model.")] = v
    return weights, ema


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _check_shapes(path: Path, expected: dict[str, tuple], found: dict[str, tuple], what: str) -> None:
    """FdmError naming the first few missing, unexpected and wrong-shape keys, if any."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} (expected {list(expected[k])}, found {list(found[k])})"
             for k in expected if k in found and expected[k] != found[k]]
    problems = [f"{label} {_few(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise FdmError(f"{path}: {what}: " + "; ".join(problems))


def _few(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _standalone(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy owning its storage: safetensors rejects views and tied tensors, and
    torch.save of a view would store the whole underlying storage."""
    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _json_plain(path: Path, what: str, value: dict[str, Any]) -> dict[str, Any]:
    """`value` as JSON would give it back, so both formats store and return the same thing."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise FdmError(f"{path}: {what} must hold plain JSON values: {e}") from None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__


# ---------------------------------------------------------------------------------------------
# Metadata


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    """Validate the decoded metadata; `extra` may be absent (hand-made files)."""
    if not isinstance(meta, dict) or "fdm_format" not in meta:
        raise FdmError(f"{path}: not an fdm checkpoint (no 'fdm_format' in its metadata; one written by a "
                       "published codebase converts with `fdm convert SRC DST --from NAME`)")
    if meta["fdm_format"] != FORMAT_VERSION:
        raise FdmError(f"{path}: unsupported fdm_format {meta['fdm_format']!r} "
                       f"(this fdm reads {FORMAT_VERSION})")
    meta = {"extra": {}, **meta}
    unknown = sorted(set(meta) - set(_META_KEYS))
    missing = [k for k in _META_KEYS if k not in meta]
    if unknown or missing:
        parts = [f"{label} {', '.join(keys)}"
                 for label, keys in (("missing", missing), ("unknown", unknown)) if keys]
        raise FdmError(f"{path}: malformed metadata: {'; '.join(parts)}")
    if not isinstance(meta["model"], str):
        raise FdmError(f"{path}: malformed metadata: 'model' must be a name (got {meta['model']!r})")
    for k in ("model_config", "diffusion", "extra"):
        if not isinstance(meta[k], dict):
            raise FdmError(f"{path}: malformed metadata: {k!r} must be a dict "
                           f"(got {type(meta[k]).__name__})")
    return meta


# ---------------------------------------------------------------------------------------------
# Formats: each has a reader (path -> _Raw) and a writer (_Raw, path) -> None.


def _read_safetensors(path: Path) -> _Raw:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            strings = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # the parser's own errors on untrusted bytes: all mean "bad file"
        raise FdmError(f"{path}: not a valid safetensors file (corrupt or truncated?): "
                       f"{_first_line(e)}") from None
    meta: dict[str, Any] = dict(strings)
    try:
        if "fdm_format" in meta:
            meta["fdm_format"] = int(meta["fdm_format"])
        for k in ("model_config", "diffusion", "extra"):
            if k in meta:
                meta[k] = json.loads(meta[k])
    except ValueError as e:
        raise FdmError(f"{path}: malformed metadata: {_first_line(e)}") from None
    return _Raw(_check_meta(path, meta), tensors)


def _write_safetensors(raw: _Raw, path: Path) -> None:
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in raw.meta.items()}
    save_file(raw.tensors, str(path), metadata=meta)


def read_torch_file(path: Path, mmap: bool = False) -> Any:
    """The object in a torch.save file, read with `weights_only=True`: tensors and plain
    containers only, so nothing in the file can run code. `mmap` maps the tensors instead of
    reading them (cheap re-reads of big files). Every failure is an FdmError naming the file."""
    import pickle

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not (mmap and "mmap" in str(e)):
                raise
            # An old (pre-zip) torch.save file cannot be mapped; read it whole.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"GLOBAL (\S+)", str(e))
        if unsafe:
            raise FdmError(f"{path}: refuses to load: the pickle needs {unsafe.group(1)}, which could run "
                           "code; only tensors and plain values are accepted") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        reason = detail.group(1).strip() if detail else _first_line(e)
        raise FdmError(f"{path}: not a valid .pt file (corrupt or truncated?): {reason}") from None
    except Exception as e:  # zip, EOF and OS errors from torch's reader all mean "bad file"
        raise FdmError(f"{path}: not a valid .pt file (corrupt or truncated?): {_first_line(e)}") from None


def _read_pt(path: Path) -> _Raw:
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise FdmError(f"{path}: not an fdm checkpoint (holds a {type(obj).__name__}, not a dict)")
    obj = dict(obj)
    weights, ema = obj.pop("state_dict", None), obj.pop("ema", {})
    meta = _check_meta(path, obj)
    if weights is None:
        raise FdmError(f"{path}: malformed checkpoint: no 'state_dict'")
    tensors = {**_prefixed(path, "state_dict", weights, "model."), **_prefixed(path, "ema", ema, "ema.")}
    return _Raw(meta, tensors)


def _prefixed(path: Path, what: str, state: Any, prefix: str) -> dict[str, torch.Tensor]:
    """`state` (a dict of tensors) with `prefix` on every key, after checking its types."""
    if not isinstance(state, dict):
        raise FdmError(f"{path}: malformed checkpoint: {what!r} must be a dict of tensors")
    bad = [str(k) for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise FdmError(f"{path}: malformed checkpoint: {what!r} has non-tensor entries: {_few(bad)}")
    return {prefix + k: v for k, v in state.items()}


def _write_pt(raw: _Raw, path: Path) -> None:
    weights, ema = _split(raw.tensors)
    obj = {**raw.meta, "state_dict": weights}
    if ema:
        obj["ema"] = ema
    torch.save(obj, path)


_READERS: dict[str, Callable[[Path], _Raw]] = {".safetensors": _read_safetensors, ".pt": _read_pt}
_WRITERS: dict[str, Callable[[_Raw, Path], None]] = {".safetensors": _write_safetensors, ".pt": _write_pt}


def _suffix(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise FdmError(f"{path}: unknown checkpoint format {path.suffix or '(no suffix)'!r} "
                       f"(use {' or '.join(SUFFIXES)})")
    return path.suffix


def check_suffix(path) -> str:
    """The checkpoint format `path` names by its suffix; FdmError for any other suffix."""
    return _suffix(Path(path))


def _writer(path: Path) -> Callable[[_Raw, Path], None]:
    return _WRITERS[_suffix(path)]


def read_extra(path) -> dict:
    """A checkpoint's `extra` metadata (its training data, config), without building its model."""
    return _read(Path(path)).meta["extra"]


def _read(path: Path) -> _Raw:
    if not path.exists():  # before its suffix: a mistyped path is what the user needs to hear of
        raise FdmError(f"{path}: no such file")
    if not path.is_file():
        raise FdmError(f"{path}: not a file")
    return _READERS[_suffix(path)](path)


def _write_atomic(path: Path, raw: _Raw) -> None:
    """Write through a synced temp file renamed over `path` (see fdm_engine.files.atomic_write)."""
    write = _writer(path)
    with atomic_write(path, fsync=True) as tmp:
        write(raw, tmp)
