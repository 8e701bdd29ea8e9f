"""Frame metrics against ground truth (PSNR, SSIM) and revisit consistency, on uint8 pixels.

Frames are uint8 [..., H, W, C] (viewing space, `fdm_engine.video_io`); metrics use data range
255. Every metric maps (a, b) [..., H, W, C] -> [...], one value per frame, and lives in METRICS.

- PSNR = 10 log10(255^2 / MSE); identical frames (MSE = 0) score PSNR_MAX = 100 dB instead of
  infinity, so averages over frames stay finite.
- SSIM (Wang et al. 2004): Gaussian window 11 x 11, sigma 1.5, C1 = (0.01 * 255)^2,
  C2 = (0.03 * 255)^2, population (not sample) statistics, the map averaged over the positions
  where the window fits inside the frame ("valid", as in Wang's reference code and skimage with
  gaussian_weights=True), then over channels. Frames smaller than 11 px use the largest odd window
  that fits (same sigma).
- Revisit consistency: for frames i < j with the same camera pose (from the dataset's saved state)
  and j generated, the PSNR between generated frames i and j. A perfect long-range model repeats
  itself (for revisit-world, frames at equal pose are identical in the data).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fdm_engine.registry import Registry

DATA_RANGE = 255.0
PSNR_MAX = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03

METRICS: Registry = Registry("video metric")


def _float(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


@METRICS.register("psnr")
def psnr(a, b) -> np.ndarray:
    """a, b [..., H, W, C] uint8 (or float on the 0..255 scale) -> PSNR in dB [...]."""
    mse = ((_float(a) - _float(b)) ** 2).mean(dim=(-3, -2, -1))
    out = 10 * torch.log10(DATA_RANGE**2 / mse.clamp(min=DATA_RANGE**2 * 10 ** (-PSNR_MAX / 10)))
    return out.numpy()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """[size] normalised 1D Gaussian (the 2D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _blur(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid separable filtering of x [N, 1, H, W] by the window w [k] -> [N, 1, H-k+1, W-k+1]."""
    x = F.conv2d(x, w.view(1, 1, -1, 1))
    return F.conv2d(x, w.view(1, 1, 1, -1))


@METRICS.register("ssim")
def ssim(a, b) -> np.ndarray:
    """a, b [..., H, W, C] uint8 (or float on the 0..255 scale) -> mean SSIM [...]."""
    x, y = _float(a), _float(b)
    lead, (H, W, C) = x.shape[:-3], x.shape[-3:]
    size = min(SSIM_WINDOW, H - (1 - H % 2), W - (1 - W % 2))  # largest odd window that fits
    w = gaussian_window(size)
    x = x.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W)  # [N*C, 1, H, W]
    y = y.reshape(-1, H, W, C).permute(0, 3, 1, 2).reshape(-1, 1, H, W)
    mx, my = _blur(x, w), _blur(y, w)
    vx = _blur(x * x, w) - mx**2
    vy = _blur(y * y, w) - my**2
    cxy = _blur(x * y, w) - mx * my
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    per_channel = smap.mean(dim=(-3, -2, -1)).reshape(-1, C)
    return per_channel.mean(dim=1).reshape(lead).numpy()


def frame_metrics(samples: np.ndarray, truth: np.ndarray, names=None) -> dict[str, np.ndarray]:
    """samples, truth uint8 [V, T, H, W, C] -> {metric: [V, T]} for every metric in METRICS."""
    return {name: METRICS.get(name)(samples, truth) for name in (names or METRICS.names())}


def summarise(values: np.ndarray, n_obs: int) -> dict:
    """values [V, T] -> per-frame mean over videos [T] and the mean/std over generated frames."""
    gen = values[:, n_obs:]
    return {"per_frame": values.mean(axis=0).tolist(), "mean": float(gen.mean()) if gen.size else None,
            "std_over_videos": float(gen.mean(axis=1).std()) if gen.size else None}


def revisit_pairs(pose: np.ndarray, n_obs: int, tol: float = 0.5) -> np.ndarray:
    """pose [T, k] -> pairs [P, 2] (i < j, j >= n_obs) whose poses lie within tol (max-norm)."""
    pose = np.asarray(pose, dtype=np.float64).reshape(len(pose), -1)
    dist = np.abs(pose[:, None, :] - pose[None, :, :]).max(axis=-1)  # [T, T]
    i, j = np.nonzero(np.triu(dist <= tol, k=1))
    keep = j >= n_obs
    return np.stack([i[keep], j[keep]], axis=1)


def revisit_values(frames: np.ndarray, truth: np.ndarray, pose: np.ndarray, n_obs: int,
                   tol: float = 0.5) -> dict[str, np.ndarray]:
    """One video: frames, truth uint8 [T, H, W, C], pose [T, k] -> per revisit pair [P]: gap j - i,
    psnr between generated frames i and j, truth_psnr (the same pair in the ground truth; 100 dB
    where the data repeats exactly) and given (whether i is a given frame)."""
    pairs = revisit_pairs(pose, n_obs, tol)
    i, j = pairs[:, 0], pairs[:, 1]
    empty = np.zeros(0)
    return {"gap": j - i, "given": i < n_obs,
            "psnr": psnr(frames[i], frames[j]) if len(pairs) else empty,
            "truth_psnr": psnr(truth[i], truth[j]) if len(pairs) else empty}


def revisit_summary(per_video: list[dict[str, np.ndarray]], bins: int = 10) -> dict | None:
    """Pool revisit_values over videos: mean PSNR over all pairs, over pairs whose earlier frame
    is given ("to_given") or generated ("among_generated"), and in `bins` bins of the gap.
    None when no video revisits a place."""
    if not per_video:
        return None
    pooled = {k: np.concatenate([v[k] for v in per_video]) for k in per_video[0]}
    values, gaps, given = pooled["psnr"], pooled["gap"], pooled["given"].astype(bool)
    if not len(values):
        return None
    edges = np.linspace(gaps.min(), gaps.max() + 1, bins + 1)
    which = np.clip(np.digitize(gaps, edges) - 1, 0, bins - 1)
    by_gap = [{"gap": float(gaps[which == b].mean()), "pairs": int((which == b).sum()),
               "psnr": float(values[which == b].mean())} for b in range(bins) if (which == b).any()]
    return {"videos": sum(len(v["gap"]) > 0 for v in per_video), "pairs": int(len(values)),
            "psnr": float(values.mean()), "truth_psnr": float(pooled["truth_psnr"].mean()),
            "to_given": _mean_or_none(values[given]), "among_generated": _mean_or_none(values[~given]),
            "by_gap": by_gap}


def _mean_or_none(v: np.ndarray) -> float | None:
    return float(v.mean()) if v.size else None
