"""`revisit-world`: a camera window panning over one large fixed random map along a closed loop.

Each video has its own world (a smooth random colour field with random coloured shapes on it,
`world_scale` times the frame size) and its own loop; the camera goes round the loop every
`period` frames, so the same places come back again and again. A model that forgets what it
drew draws something else when it returns. The pose is an integer pixel offset and is exactly
periodic, so frames t and t + period are identical, as are any two frames with equal pose.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from fdm_engine.config import Config
from fdm_engine.errors import FdmError


@dataclasses.dataclass(frozen=True)
class RevisitWorld(Config):
    world_scale: float = 4.0  # world side / frame side
    shapes_per_view: float = 3.0  # density of shapes: about this many per frame-sized area
    min_loops: float = 2.0  # each video goes round its loop between min_loops and max_loops times
    max_loops: float = 4.0

    description: ClassVar[str] = ("a camera panning a closed loop over a fixed random map, revisiting places; "
                                  "state: pose [T, 2] (x, y of the view in the world), period, world")
    coords_key: ClassVar[str] = "pose"

    def __post_init__(self):
        if self.world_scale < 1.5 or not 0 < self.min_loops <= self.max_loops:
            raise FdmError("revisit-world: need world_scale >= 1.5 and 0 < min_loops <= max_loops")

    def generate(self, rng: np.random.Generator, length: int, size: int):
        """-> frames uint8 [T, size, size, 3], state {pose [T, 2] int (x, y of the view's top-left
        in the world), period (frames per loop), world uint8 [W, W, 3]}."""
        side = int(round(self.world_scale * size))
        world = make_world(rng, side, round(self.shapes_per_view * (side / size) ** 2))
        period = max(2, int(round(length / rng.uniform(self.min_loops, self.max_loops))))
        loop = loop_poses(rng, period, side - size)  # [period, 2]
        pose = loop[np.arange(length) % period]  # [T, 2]: exactly periodic
        frames = np.stack([world[y:y + size, x:x + size] for x, y in pose])
        return frames, {"pose": pose, "period": np.int32(period), "world": world}


def loop_poses(rng: np.random.Generator, period: int, free: int) -> np.ndarray:
    """A random smooth closed loop of `period` integer poses [period, 2] (x, y) in [0, free]^2:
    an ellipse with a random wobble (a third harmonic), random phase and direction."""
    theta = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * 2 * np.pi * np.arange(period) / period
    centre = free / 2 + rng.uniform(-0.05, 0.05, 2) * free
    radius = rng.uniform(0.25, 0.4, 2) * free
    wobble = rng.uniform(0, 0.08) * free * np.sin(3 * theta + rng.uniform(0, 2 * np.pi))
    x = centre[0] + (radius[0] + wobble) * np.cos(theta)
    y = centre[1] + (radius[1] + wobble) * np.sin(theta)
    return np.clip(np.rint(np.stack([x, y], 1)), 0, free).astype(np.int32)


def make_world(rng: np.random.Generator, side: int, num_shapes: int) -> np.ndarray:
    """uint8 [side, side, 3]: a smooth random colour field with random filled shapes on it."""
    from PIL import Image, ImageDraw

    coarse = rng.integers(30, 226, (6, 6, 3), dtype=np.uint8)
    world = Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(world)
    for _ in range(num_shapes):
        w, h = rng.uniform(0.03, 0.12, 2) * side
        x, y = rng.uniform(0, side, 2)
        box = [float(x - w / 2), float(y - h / 2), float(x + w / 2), float(y + h / 2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:  # a triangle pointing a random way
            pts = [(float(x + w / 2 * np.cos(a)), float(y + h / 2 * np.sin(a)))
                   for a in rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])]
            draw.polygon(pts, fill=colour)
    return np.asarray(world, dtype=np.uint8).copy()
