"""Training checkpoints in a run folder, written atomically, found again on resume.

    RUN_DIR/checkpoints/step_{N:07d}.safetensors   model + EMA weights, model/diffusion config,
                                                   extra = {step, dataset, data_dir, train_config}
                                                   (what `fdm sample` reads; EMA by default)
    RUN_DIR/checkpoints/step_{N:07d}.state.pt      optimiser, RNG states of every rank (torch,
                                                   numpy, python, CUDA), data position, EMA count

Both files are written to a temp file and renamed, the companion first: a step whose
.safetensors exists has its companion too, and a kill at any moment leaves the previous
checkpoint intact. Resuming takes the newest step whose two files both load.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fdm_engine.checkpoint import load_checkpoint, save_checkpoint
from fdm_engine.errors import FdmError
from fdm_engine.files import atomic_write

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{7,})\.safetensors$")


def checkpoint_path(run_dir, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.safetensors"


def state_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.replace(".safetensors", ".state.pt"))


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in the run folder, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(run_dir, step: int, model, ema, diffusion, optimizer, data_state: dict,
                             rng_states: list[dict], extra: dict[str, Any], elapsed: float = 0.0) -> Path:
    """Write the companion, then the model file (both atomically). Returns the model file's path."""
    path = checkpoint_path(run_dir, step)
    companion = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_states,
                 "data": data_state, "ema_updates": ema.updates, "elapsed_s": elapsed}
    with atomic_write(state_path(path)) as tmp:
        torch.save(companion, tmp)
    save_checkpoint(path, model, diffusion, ema_state=ema.state_dict(), extra={**extra, "step": step})
    return path


def load_training_checkpoint(path: Path, device) -> dict[str, Any]:
    """{"weights", "ema", "companion", "extra"} of one checkpoint; FdmError if either file is bad."""
    companion_file = state_path(path)
    if not companion_file.is_file():
        raise FdmError(f"{path}: its training state {companion_file.name} is missing")
    try:
        companion = torch.load(companion_file, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated file: all mean "cannot resume from here"
        raise FdmError(f"{companion_file}: cannot read training state ({type(e).__name__}: {e})") from None
    plain = load_checkpoint(path, device=device, use_ema=False)
    averaged = load_checkpoint(path, device=device, use_ema=True)
    if not averaged.used_ema:
        raise FdmError(f"{path}: holds no EMA weights")
    return {"weights": plain.model.state_dict(), "ema": averaged.model.state_dict(),
            "companion": companion, "extra": plain.extra, "model_name": plain.model_name}


def latest_training_checkpoint(run_dir, device) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads (older ones tried when a newer one is broken), or None."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_training_checkpoint(path, device)
        except FdmError as e:
            warnings.warn(f"skipping checkpoint {path.name}: {e}", stacklevel=2)
    return None


def prune_checkpoints(run_dir, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)  # model file first: a step is never left half-listed
        state_path(path).unlink(missing_ok=True)
