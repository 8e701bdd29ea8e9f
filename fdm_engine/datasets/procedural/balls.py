"""`bouncing-balls`: coloured discs moving in straight lines, reflected elastically by the walls.

Coordinates are in pixels with the origin at the top-left corner of pixel (0, 0): pixel (row r,
column c) covers [c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5). Balls pass through
each other (no ball-ball collisions); later balls are drawn over earlier ones. Edges are
antialiased by pixel coverage, so a pixel whose centre lies 0.5 px or more inside a ball, the
pixel holding the centre among them, has exactly the ball's colour.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from fdm_engine.config import Config
from fdm_engine.datasets.procedural.motion import bounce, random_velocity
from fdm_engine.errors import FdmError

# Saturated, mutually distinct colours; each ball in a video gets a different one.
PALETTE = np.array([[230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40], [40, 220, 230],
                    [220, 60, 220], [250, 140, 30], [240, 240, 240]], dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class BouncingBalls(Config):
    """Sizes and speeds are fractions of the canvas side, so one config serves every size."""

    num_balls: int = 3
    min_radius: float = 0.08  # of the canvas side
    max_radius: float = 0.18
    min_speed: float = 0.02  # canvas sides per frame
    max_speed: float = 0.06

    description: ClassVar[str] = "coloured balls bouncing off the walls; state: centres [T, K, 2] (x, y), radii [K]"
    coords_key: ClassVar[str] = "centres"

    def __post_init__(self):
        if not 1 <= self.num_balls <= len(PALETTE):
            raise FdmError(f"bouncing-balls: num_balls must be in 1..{len(PALETTE)} (got {self.num_balls})")
        if not 0 < self.min_radius <= self.max_radius < 0.5:
            raise FdmError("bouncing-balls: need 0 < min_radius <= max_radius < 0.5")

    def generate(self, rng: np.random.Generator, length: int, size: int):
        """-> frames uint8 [T, size, size, 3], state {centres [T, K, 2], radii [K], colours [K, 3]}."""
        k = self.num_balls
        # >= 1.5 px so the centre pixel is always fully covered (see the module docstring).
        radii = np.maximum(rng.uniform(self.min_radius, self.max_radius, k) * size, 1.5)
        radii = np.minimum(radii, size / 2 - 0.5)
        colours = PALETTE[rng.permutation(len(PALETTE))[:k]]
        pos = rng.uniform(radii[:, None], size - radii[:, None], (k, 2))
        vel = random_velocity(rng, k, self.min_speed * size, self.max_speed * size)
        centres = bounce(pos, vel, radii[:, None], size - radii[:, None], length)  # [T, K, 2]
        # Render from exactly the float32 values saved, so state and pixels agree to the bit.
        centres, radii = centres.astype(np.float32), radii.astype(np.float32)
        frames = render(centres, radii, colours, size)
        state = {"centres": centres, "radii": radii, "colours": colours}
        return frames, state


def render(centres: np.ndarray, radii: np.ndarray, colours: np.ndarray, size: int) -> np.ndarray:
    """centres [T, K, 2], radii [K], colours [K, 3] -> uint8 [T, size, size, 3] on black."""
    c = (np.arange(size) + 0.5).astype(np.float32)  # pixel centres
    img = np.zeros((len(centres), size, size, 3), np.float32)
    for k in range(len(radii)):
        dx = c[None, None, :] - centres[:, k, 0, None, None]  # [T, 1, W]
        dy = c[None, :, None] - centres[:, k, 1, None, None]  # [T, H, 1]
        # coverage: 1 inside by >= 0.5 px, 0 outside by >= 0.5 px, linear across the edge
        alpha = np.clip(radii[k] - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1)[..., None]  # [T, H, W, 1]
        img += alpha * (colours[k].astype(np.float32) - img)
    return np.rint(img).astype(np.uint8)
