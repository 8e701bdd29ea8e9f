"""Drift: does a long generated video slide into blur or noise? Per-frame measures, head vs tail.

Each measure maps uint8 frames [T, H, W, C] -> [T] and lives in DRIFT (a registry):

- gradient-energy: mean squared difference of neighbouring pixels (both axes, 0..1 scale). Blur
  lowers it; noise raises it.
- laplacian-var: variance of the 4-neighbour Laplacian over the valid interior (0..1 scale), the
  usual focus measure. Blur lowers it; noise raises it.
- palette-fraction: share of pixels within PALETTE_TOL of black or a bouncing-balls colour (real
  frames ~0.95, the rest antialiased edges). Noise and blur both lower it; a dataset-specific
  measure of structure.

`drift_summary(frames, head=100, tail=100)` gives each measure's mean over the first `head` and
the last `tail` frames and their ratio (tail / head; ~1 for a video that does not drift).
"""

from __future__ import annotations

import numpy as np

from fdm_engine.datasets.procedural.balls import PALETTE
from fdm_engine.errors import FdmError
from fdm_engine.registry import Registry

DRIFT: Registry = Registry("drift measure", group="fdm.drift")
PALETTE_TOL = 40.0


def _grey(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, C] -> float [T, H, W] on 0..1 (channel mean)."""
    return frames.astype(np.float64).mean(-1) / 255.0


@DRIFT.register("gradient-energy")
def gradient_energy(frames: np.ndarray) -> np.ndarray:
    g = _grey(frames)
    dx, dy = np.diff(g, axis=2), np.diff(g, axis=1)
    return (dx**2).mean((1, 2)) + (dy**2).mean((1, 2))


@DRIFT.register("laplacian-var")
def laplacian_variance(frames: np.ndarray) -> np.ndarray:
    g = _grey(frames)
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]
    return lap.reshape(len(g), -1).var(1)


@DRIFT.register("palette-fraction")
def palette_fraction(frames: np.ndarray, tol: float = PALETTE_TOL) -> np.ndarray:
    if frames.shape[-1] != 3:
        raise FdmError(f"palette-fraction needs RGB frames (got {frames.shape[-1]} channels)")
    ref = np.concatenate([np.zeros((1, 3)), PALETTE]).astype(np.float32)
    d = np.linalg.norm(frames[..., None, :].astype(np.float32) - ref, axis=-1).min(-1)  # [T, H, W]
    return (d <= tol).mean((1, 2))


def drift_values(frames: np.ndarray, names=None) -> dict[str, np.ndarray]:
    """uint8 [T, H, W, C] -> {measure: [T]}."""
    return {n: DRIFT.get(n)(frames) for n in (names or DRIFT.names())}


def drift_summary(values: dict[str, np.ndarray], head: int = 100, tail: int = 100) -> dict[str, dict]:
    """{measure: [T] or [V, T]} -> {measure: {head, tail, ratio}} (means over videos and frames)."""
    out = {}
    for name, v in values.items():
        v = np.atleast_2d(v)
        if v.shape[1] < head or v.shape[1] < tail:
            raise FdmError(f"drift: videos have {v.shape[1]} frames, fewer than head {head} / tail {tail}")
        h, t = float(v[:, :head].mean()), float(v[:, -tail:].mean())
        out[name] = {"head": h, "tail": t, "ratio": t / h if h else None}
    return out
