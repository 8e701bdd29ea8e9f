"""The generator registry: name -> config class with `generate(rng, length, size)`.

A generator is a frozen `Config` dataclass (its fields are its knobs, saved in the manifest)
with `generate(rng, length, size) -> (frames uint8 [T, size, size, C], state dict)`, a
`description` and a `coords_key` (the per-frame state saved as coords_{i}.npy in the carla
layout). Plug-ins add theirs through the entry-point group `fdm.generators`.
"""

from fdm_engine.datasets.procedural.balls import BouncingBalls
from fdm_engine.datasets.procedural.digits import MovingDigits
from fdm_engine.datasets.procedural.revisit import RevisitWorld
from fdm_engine.registry import Registry

GENERATORS: Registry = Registry("procedural dataset", group="fdm.generators")
GENERATORS.register("bouncing-balls", BouncingBalls)
GENERATORS.register("moving-digits", MovingDigits)
GENERATORS.register("revisit-world", RevisitWorld)
