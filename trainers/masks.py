"""Which frames a training example observes and which it generates.

FDM (Harvey et al. 2022; docs/training.md): for a clip of T frames and a budget of K slots,

    sample_group(budget): s ~ U{1..budget}; max_scale = T / (s - 0.999)
                          scale = exp(u * log(max_scale)), u ~ U[0, 1)
                          pos ~ U[0, T - scale * (s - 1)); idx_i = floor(pos + i * scale), i < s
                          retry if any idx is outside [0, T)
    latent = sample_group(K)
    loop: target = observed or latent, with probability 1/2 each
          g = sample_group(K) minus the indices already used
          if len(g) > K - used: stop
          target += g

Slots left unused (of K) are padding, filled by the trainer with frames of another clip. The loop
also stops once all K slots are used (same masks; the published loop never ended when T == K).

RaMViD (Höppe et al. 2022): with probability `uncondition_rate` a clip has no conditioning
frames; otherwise r ~ U{1..max_num_mask_frames} of its positions, chosen uniformly without
replacement, are conditioning frames.

All samplers draw from a numpy Generator, so a mask is a function of the generator's seed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from fdm_engine.errors import FdmError


class FrameSelection(NamedTuple):
    """Sorted frame indices of one example: conditioning (observed) and generated (latent)."""

    observed: list[int]
    latent: list[int]

    @property
    def used(self) -> int:
        return len(self.observed) + len(self.latent)


def sample_group(length: int, budget: int, rng: np.random.Generator) -> list[int]:
    """A group of 1..budget frame indices in [0, length), evenly spaced at a log-uniform scale."""
    while True:
        s = int(rng.integers(1, budget + 1))
        max_scale = length / (s - 0.999)
        scale = math.exp(rng.random() * math.log(max_scale))
        pos = rng.random() * (length - scale * (s - 1))
        idx = [int(math.floor(pos + i * scale)) for i in range(s)]
        if all(0 <= i < length for i in idx):  # float rounding can push the last one out
            return idx


def fdm_selection(length: int, max_frames: int, rng: np.random.Generator) -> FrameSelection:
    """The observed and latent frames of one FDM training example (docs/training.md).

    length: frames in the training clip (T); max_frames: slots the model sees (K). The result
    uses between 1 and K slots; at least one frame is latent.
    """
    if max_frames < 1 or length < max_frames:
        raise FdmError(f"FDM masks need 1 <= max_frames <= clip length (got K={max_frames}, T={length})")
    latent = set(sample_group(length, max_frames, rng))
    observed: set[int] = set()
    # Once all K slots are used no group can be added (it is empty or too big), so stopping there
    # gives the same masks; the published loop spun forever in that state when T == K.
    while len(observed) + len(latent) < max_frames:
        target = observed if rng.random() < 0.5 else latent
        group = [i for i in sample_group(length, max_frames, rng) if i not in observed and i not in latent]
        if len(group) > max_frames - len(observed) - len(latent):
            break
        target.update(group)
    return FrameSelection(sorted(observed), sorted(latent))


def ramvid_selection(frames: int, max_num_mask_frames: int, uncondition_rate: float,
                     rng: np.random.Generator) -> FrameSelection:
    """The conditioning and generated positions of one RaMViD training clip of `frames` frames."""
    if not 1 <= max_num_mask_frames < frames:
        raise FdmError(f"max_num_mask_frames must be in [1, {frames - 1}] for {frames}-frame clips "
                       f"(got {max_num_mask_frames})")
    if not 0.0 <= uncondition_rate <= 1.0:
        raise FdmError(f"uncondition_rate must be in [0, 1] (got {uncondition_rate})")
    if rng.random() < uncondition_rate:
        return FrameSelection([], list(range(frames)))
    r = int(rng.integers(1, max_num_mask_frames + 1))
    observed = sorted(int(i) for i in rng.choice(frames, size=r, replace=False))
    taken = set(observed)
    return FrameSelection(observed, [i for i in range(frames) if i not in taken])


def example_rng(seed: int, *key: int) -> np.random.Generator:
    """A generator for one example stream, keyed by (seed, rank, step, micro-batch, ...)."""
    return np.random.default_rng([seed, *key])
