"""Straight-line motion between walls, shared by the bouncing generators."""

from __future__ import annotations

import numpy as np


def bounce(pos: np.ndarray, vel: np.ndarray, lo: np.ndarray, hi: np.ndarray, length: int) -> np.ndarray:
    """Positions [K, 2] moving by vel [K, 2] per frame inside the box [lo, hi] (broadcast to
    [K, 2]), reflected elastically at its walls -> positions [T, K, 2], frame 0 first."""
    pos, vel = pos.astype(np.float64), vel.astype(np.float64)
    out = np.empty((length,) + pos.shape)
    for t in range(length):
        out[t] = pos
        pos = pos + vel
        # Mirror a position that crossed a wall back inside and flip that velocity component.
        below, above = pos < lo, pos > hi
        pos = np.where(below, 2 * lo - pos, np.where(above, 2 * hi - pos, pos))
        vel = np.where(below | above, -vel, vel)
        pos = np.clip(pos, lo, hi)  # only matters for speeds above the free width
    return out


def random_velocity(rng: np.random.Generator, k: int, min_speed: float, max_speed: float) -> np.ndarray:
    """k velocities [k, 2] with uniform directions and speeds in [min_speed, max_speed]."""
    angle = rng.uniform(0, 2 * np.pi, k)
    speed = rng.uniform(min_speed, max_speed, k)
    return np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
