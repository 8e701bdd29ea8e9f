"""`moving-digits`: Moving-MNIST-like, digits bouncing on a black canvas.

MNIST cannot be downloaded here, so the glyphs are the digits 0-9 of Pillow's bundled default
font, drawn thick and scaled to `glyph_height` of the canvas. Digits move on integer pixel
positions (as in Moving MNIST) and overlap by maximum, so a frame is exactly
max over digits of glyph(digit) pasted at positions[t, d].
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import ClassVar

import numpy as np

from fdm_engine.config import Config
from fdm_engine.datasets.procedural.motion import bounce, random_velocity
from fdm_engine.errors import FdmError


@dataclasses.dataclass(frozen=True)
class MovingDigits(Config):
    num_digits: int = 2
    glyph_height: float = 0.45  # of the canvas side (MNIST: 28 px digits on 64 px)
    min_speed: float = 0.03  # canvas sides per frame
    max_speed: float = 0.06
    channels: int = 1  # 1 (grey, as Moving MNIST) or 3 (grey repeated)

    description: ClassVar[str] = ("Moving-MNIST-like digits (Pillow's font) bouncing; "
                                  "state: positions [T, D, 2] (x, y of each glyph's top-left)")
    coords_key: ClassVar[str] = "positions"

    def __post_init__(self):
        if self.num_digits < 1 or not 0 < self.glyph_height <= 1 or self.channels not in (1, 3):
            raise FdmError("moving-digits: need num_digits >= 1, 0 < glyph_height <= 1, channels 1 or 3")

    def generate(self, rng: np.random.Generator, length: int, size: int):
        """-> frames uint8 [T, size, size, C], state {positions [T, D, 2] int (x, y),
        digits [D], glyph_shapes [D, 2] (h, w)}."""
        digits = rng.integers(0, 10, self.num_digits)
        height = max(5, round(self.glyph_height * size))
        glyphs = [glyph(int(d), height) for d in digits]
        shapes = np.array([g.shape for g in glyphs])  # [D, 2] (h, w)
        if (shapes > size).any():
            raise FdmError(f"moving-digits: canvas {size} px is too small for {height} px glyphs")
        hi = (size - shapes[:, ::-1]).astype(np.float64)  # [D, 2] largest top-left (x, y)
        pos = rng.uniform(0, 1, (self.num_digits, 2)) * hi
        vel = random_velocity(rng, self.num_digits, self.min_speed * size, self.max_speed * size)
        positions = np.rint(bounce(pos, vel, 0.0, hi, length)).astype(np.int32)  # [T, D, 2]
        frames = render(glyphs, positions, size)[..., None]  # [T, H, W, 1]
        if self.channels == 3:
            frames = np.repeat(frames, 3, axis=-1)
        return frames, {"positions": positions, "digits": digits.astype(np.int32),
                        "glyph_shapes": shapes.astype(np.int32)}


def render(glyphs: list[np.ndarray], positions: np.ndarray, size: int) -> np.ndarray:
    """Glyphs [h_d, w_d] uint8 at positions [T, D, 2] (x, y) -> uint8 [T, size, size]."""
    frames = np.zeros((len(positions), size, size), np.uint8)
    for t, frame in enumerate(frames):
        for g, (x, y) in zip(glyphs, positions[t], strict=True):
            h, w = g.shape
            np.maximum(frame[y:y + h, x:x + w], g, out=frame[y:y + h, x:x + w])
    return frames


@lru_cache(maxsize=None)
def glyph(digit: int, height: int) -> np.ndarray:
    """The digit drawn thick, cropped to its ink and scaled to `height` rows: uint8 [height, w]."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font, big = ImageFont.load_default(size=64), 64  # scalable when Pillow has FreeType
    except (TypeError, OSError, ImportError, AttributeError):
        font, big = ImageFont.load_default(), 11  # the old bitmap font
    canvas = Image.new("L", (2 * big, 2 * big))
    ImageDraw.Draw(canvas).text((big // 2, big // 2), str(digit), fill=255, font=font,
                                stroke_width=max(1, big // 14), stroke_fill=255)
    ink = canvas.crop(canvas.getbbox())
    width = max(1, round(ink.width * height / ink.height))
    g = np.asarray(ink.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8).copy()
    g.setflags(write=False)  # shared by the cache
    return g
