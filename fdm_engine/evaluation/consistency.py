"""Long-range consistency of a video against its generator's ground-truth state, per frame index.

A measure is registered under the procedural generator's name (`fdm data make NAME`) and maps
(frames uint8 [T, H, W, C], the video's saved state) -> {curve name: [T] in [0, 1]}, with a
"score" curve that sums it up (1 = consistent with the truth). Another generator adds its own:

    @CONSISTENCY.register("my-generator")
    def my_consistency(frames, state, **options) -> dict[str, np.ndarray]: ...

(or an entry point in the group "fdm.consistency"). Revisit-world's own measure, PSNR between
visits of one place, is `revisit_values` in video_metrics.py.

bouncing-balls: every ball has its own colour from PALETTE on a black background, so a frame is
read by assigning each pixel to the nearest of black and the palette colours (left unassigned
when farther than ASSIGN_DIST, e.g. blends of two colours): a ball of colour c shows as the
pixels assigned to c. Balls pass through each other, so in the data itself a ball can be half or
wholly hidden for tens of frames (up to 43 in the 40 test videos of the demo data). The measures
therefore look at a window of `window` frames centred on each frame (cut at the video's ends):

- colour: Jaccard agreement of the colours seen in the window with the true colours; a colour is
  seen when some frame has a core of it (>= MIN_CORE pixels whose 4 neighbours share the colour,
  so that the 1-px lines where two balls' edges blend into a third palette colour do not count);
- count: 1 - |n - K| / K (at least 0), n = the number of balls seen in at least COUNT_RANK frames
  of the window, a ball being a 4-connected core of one colour with >= MIN_CORE pixels (a
  duplicated ball counts twice);
- size: share of the true balls whose largest area in the window gives a radius sqrt(area / pi)
  within `size_tol` (relative) of the true radius (a missing ball fails);
- score: the mean of the three.

Real videos score 1 except where a ball stays hidden (or split by two others) for longer than the
window; `fdm eval demo` reports the real videos' curve (its "real" row) beside a model's as the
ceiling.
"""

from __future__ import annotations

import numpy as np

from fdm_engine.datasets.procedural.balls import PALETTE
from fdm_engine.errors import FdmError
from fdm_engine.registry import Registry

CONSISTENCY: Registry = Registry("consistency measure", group="fdm.consistency")

# Pixels farther than this (0-255 RGB, Euclidean) from every reference colour stay unassigned: a
# ball's antialiased edge of coverage below ~0.6 goes to black or nowhere; a 50/50 blend of two
# palette colours is at least 40 from both (orange/yellow, the closest pair) and mostly far more.
ASSIGN_DIST = 100.0
WINDOW = 61  # frames; longer than any hidden stretch of a ball seen in the data
SIZE_TOL = 0.2
# A ball shows as a core (pixels whose 4 neighbours share its colour) of at least this many pixels:
# the 1-px lines where two balls' edges blend (red over yellow reads as orange) have no core.
MIN_CORE = 2
# The count of balls in a window is its COUNT_RANK-th largest per-frame count: a ball cut in two by
# others passing over it lasts a frame or two; a duplicated ball that persists is still counted.
COUNT_RANK = 3


def assign_palette(frames: np.ndarray, palette: np.ndarray = PALETTE, max_dist: float = ASSIGN_DIST) -> np.ndarray:
    """uint8 [T, H, W, 3] -> int [T, H, W]: 0 black, 1 + i palette colour i, -1 unassigned."""
    ref = np.concatenate([np.zeros((1, 3)), palette]).astype(np.float32)  # [1 + P, 3]
    d = np.linalg.norm(frames[..., None, :].astype(np.float32) - ref, axis=-1)  # [T, H, W, 1 + P]
    label = d.argmin(-1)
    return np.where(d.min(-1) <= max_dist, label, -1)


def blob_counts(masks: np.ndarray, min_area: float) -> np.ndarray:
    """bool [N, H, W] -> int [N]: 4-connected components with >= min_area pixels, per mask.

    Labels start as pixel indices and take their neighbours' minimum until nothing changes
    (vectorised over all masks; as many rounds as the longest path inside a blob)."""
    N, H, W = masks.shape
    none = H * W
    lab = np.where(masks, np.arange(H * W).reshape(H, W), none)
    while True:
        new = lab.copy()
        np.minimum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        np.minimum(new[:, :, 1:], lab[:, :, :-1], out=new[:, :, 1:])
        np.minimum(new[:, :, :-1], lab[:, :, 1:], out=new[:, :, :-1])
        new = np.where(masks, new, none)
        if np.array_equal(new, lab):
            break
        lab = new
    which, sizes = np.unique(np.arange(N)[:, None, None] * (none + 1) + lab, return_counts=True)
    owner, label = which // (none + 1), which % (none + 1)
    big = (label != none) & (sizes >= min_area)
    return np.bincount(owner[big], minlength=N)


def window_max(x: np.ndarray, window: int, rank: int = 1) -> np.ndarray:
    """[T, ...] -> [T, ...]: the `rank`-th largest value (1: the max) over frames t - window//2 ..
    t + window//2 (cut at the ends)."""
    half = window // 2
    padded = np.concatenate([np.full((half, *x.shape[1:]), -np.inf), x, np.full((half, *x.shape[1:]), -np.inf)])
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)  # [T, ..., window]
    return view.max(-1) if rank == 1 else np.sort(view, axis=-1)[..., -rank]


def palette_index(colours: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Ball colours [K, 3] -> their palette indices [K]."""
    hit = (np.asarray(colours)[:, None, :] == palette[None]).all(-1)  # [K, P]
    if not hit.any(1).all():
        raise FdmError(f"ball colours {np.asarray(colours).tolist()} are not all palette colours")
    return hit.argmax(1)


def core(masks: np.ndarray) -> np.ndarray:
    """bool [..., H, W] -> the pixels whose 4 neighbours are in the mask too (outside counts as in)."""
    p = np.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(1, 1), (1, 1)], constant_values=True)
    return masks & p[..., :-2, 1:-1] & p[..., 2:, 1:-1] & p[..., 1:-1, :-2] & p[..., 1:-1, 2:]


def balls_frame_stats(frames: np.ndarray, min_core: float = MIN_CORE,
                      palette: np.ndarray = PALETTE) -> dict[str, np.ndarray]:
    """uint8 [T, H, W, 3] -> area [T, P] (pixels per palette colour), core [T, P] (of them, those
    inside the colour's region) and blobs [T] (4-connected cores of >= min_core pixels: balls seen)."""
    label = assign_palette(frames, palette)
    masks = label[:, None] == 1 + np.arange(len(palette))[None, :, None, None]  # [T, P, H, W]
    inner = core(masks)
    T, P = masks.shape[:2]
    blobs = blob_counts(inner.reshape(T * P, *masks.shape[2:]), min_core).reshape(T, P)
    return {"area": masks.sum((-2, -1)), "core": inner.sum((-2, -1)), "blobs": blobs.sum(1)}


@CONSISTENCY.register("bouncing-balls")
def balls_consistency(frames: np.ndarray, state: dict, window: int = WINDOW,
                      size_tol: float = SIZE_TOL) -> dict[str, np.ndarray]:
    """frames uint8 [T, H, W, 3], state {radii [K], colours [K, 3]} -> colour, count, size, score [T]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise FdmError(f"bouncing-balls consistency needs RGB frames [T, H, W, 3] (got {list(frames.shape)})")
    radii = np.asarray(state["radii"], dtype=np.float64)
    truth = palette_index(state["colours"])  # [K]
    stats = balls_frame_stats(frames)
    area = window_max(stats["area"].astype(np.float64), window)  # [T, P]
    seen = window_max(stats["core"].astype(np.float64), window) >= MIN_CORE
    want = np.zeros(seen.shape[1], bool)
    want[truth] = True
    colour = (seen & want).sum(1) / (seen | want).sum(1)
    k = len(radii)
    count = np.clip(1 - np.abs(window_max(stats["blobs"].astype(np.float64), window, COUNT_RANK) - k) / k, 0, 1)
    r_est = np.sqrt(area[:, truth] / np.pi)  # [T, K]
    size = (np.abs(r_est / radii - 1) <= size_tol).mean(1)
    return {"colour": colour, "count": count, "size": size, "score": (colour + count + size) / 3}


def consistency(name: str, frames: np.ndarray, state: dict, **options) -> dict[str, np.ndarray]:
    """The registered measure of generator `name` on one video."""
    return CONSISTENCY.get(name)(frames, state, **options)
