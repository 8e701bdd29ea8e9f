"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D, computed offline.

The protocol of the reference code (google-research `frechet_video_distance`, which FDM's
`scripts/video_fvd.py` runs on whole videos):
1. `preprocess`: frames uint8 [T, H, W, C] resized to 224 x 224 with TF1's `resize_bilinear`
   (align_corners=False, half_pixel_centers=False: source pixel = target * in / out, no half-pixel
   shift, no antialiasing), scaled by 2x/255 - 1 to [-1, 1]; grey frames repeated to RGB.
2. `video_features`: I3D logits averaged over time, [V, 400] (TF-Hub's RGB/inception_i3d/Mean:0).
   `kind="pool"` gives the 1024-d pre-logit features instead (not the standard FVD).
3. `gaussian_fit` of each set (mean, covariance with ddof 1, as np.cov) and
   FVD = `frechet_distance` = |m1 - m2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2).

Numerics. tr (S1 S2)^(1/2) is computed as the nuclear norm (sum of singular values) of L1^T L2
for any factors with S = L L^T: the nonzero eigenvalues of S1 S2 = L1 L1^T L2 L2^T are those of
N N^T with N = L1^T L2, whose square roots are N's singular values. From features, L is the
centred data / sqrt(V - 1) (or its QR factor R^T when V > D), so no eigenvalue is square-rooted:
scipy.linalg.sqrtm(S1 @ S2) turns rounding noise ~eps * lam^2 on the zero eigenvalues of a
rank-deficient covariance (100 videos, 400 features: always) into sqrt(eps) * lam, and can return
complex values. Here a set against itself gives 0 to ~1e-12 relative.

On CUDA, cuDNN convolutions follow torch's TF32 switch (on by default; 10 mantissa bits), which
moves features away from the float32 reference by an amount not measured here: the port was
verified on CPU (benchmarks/verify_i3d_port.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fdm_engine.errors import FdmError
from fdm_engine.evaluation.i3d import INPUT_SIZE, MIN_FRAMES
from fdm_engine.evaluation.video_sets import VideoSet

FEATURES = ("logits", "pool")


# --------------------------------------------------------------------------- Fréchet distance


@dataclass
class GaussianFit:
    """N(mean, factor @ factor.T): mean [D], factor [D, k] (k <= D, or the centred samples)."""

    mean: np.ndarray
    factor: np.ndarray
    n: int = 0  # samples fitted (0: given as moments)

    @property
    def cov(self) -> np.ndarray:  # [D, D]
        return self.factor @ self.factor.T


def gaussian_fit(features) -> GaussianFit:
    """features [V, D] -> mean and covariance (ddof 1) in float64, V >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise FdmError(f"a Gaussian fit needs features [V >= 2, D] (got shape {list(x.shape)})")
    if not np.isfinite(x).all():
        raise FdmError("features hold NaN or inf")
    mean = x.mean(0)
    a = (x - mean) / math.sqrt(len(x) - 1)  # [V, D], cov = a.T @ a
    if len(x) > x.shape[1]:
        a = np.linalg.qr(a, mode="r")  # [D, D], R^T R = a^T a: a smaller factor, exactly
    return GaussianFit(mean, a.T, len(x))


def gaussian_from_moments(mean, cov) -> GaussianFit:
    """mean [D], cov [D, D] symmetric PSD -> GaussianFit (factor from an eigendecomposition)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if cov.shape != (len(mean), len(mean)):
        raise FdmError(f"covariance {list(cov.shape)} does not match mean [{len(mean)}]")
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    if w.min() < -1e-9 * max(w.max(), 1.0):
        raise FdmError(f"covariance is not positive semi-definite (eigenvalue {w.min():.3g})")
    return GaussianFit(mean, v * np.sqrt(np.clip(w, 0, None)))


def frechet_distance(a: GaussianFit, b: GaussianFit) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians: >= 0."""
    if a.mean.shape != b.mean.shape:
        raise FdmError(f"feature sizes differ ({a.mean.shape[0]} vs {b.mean.shape[0]})")
    diff = a.mean - b.mean
    tr_a, tr_b = np.sum(a.factor ** 2), np.sum(b.factor ** 2)  # tr(L L^T) = |L|_F^2
    tr_sqrt = np.linalg.svd(a.factor.T @ b.factor, compute_uv=False).sum()  # tr (S_a S_b)^(1/2)
    # Mathematically >= 0; rounding can take a distance of 0 a hair below.
    return max(float(diff @ diff + tr_a + tr_b - 2.0 * tr_sqrt), 0.0)


# --------------------------------------------------------------------------- I3D features


def _tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] rows of TF1 legacy bilinear weights: source = i * n_in / n_out, clamped."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo).to(torch.float32)
    m = torch.zeros(n_out, n_in)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m


def preprocess(frames: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 [T, H, W, C] (C = 1 or 3) -> float32 [3, T, size, size] in [-1, 1], as the reference."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise FdmError(f"frames must be uint8 [T, H, W, C] with C in (1, 3) (got {frames.dtype} {list(frames.shape)})")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32)  # [T, H, W, C]
    mh, mw = _tf_bilinear_matrix(x.shape[1], size), _tf_bilinear_matrix(x.shape[2], size)
    x = torch.einsum("ah,thwc->tawc", mh, x)
    x = torch.einsum("bw,tawc->ctab", mw, x)  # [C, T, size, size]
    x = x * 2.0 / 255.0 - 1.0  # the reference's order: 255 maps to 1 exactly
    return x.expand(3, -1, -1, -1).contiguous() if x.shape[0] == 1 else x.contiguous()


@torch.inference_mode()
def video_features(videos: VideoSet, model, frames: int, start: int = 0, kind: str = "logits",
                   batch_frames: int = 128, device="cpu", progress=None) -> np.ndarray:
    """I3D features of every video's frames start .. start + frames - 1: float64 [V, 400] (logits)
    or [V, 1024] (pool). Videos go through in batches of about `batch_frames` frames."""
    if kind not in FEATURES:
        raise FdmError(f"features {kind!r}: expected one of {', '.join(FEATURES)}")
    if frames < MIN_FRAMES:
        raise FdmError(f"I3D needs at least {MIN_FRAMES} frames per video (got --frames {frames})")
    per_batch = max(1, batch_frames // frames)
    out = []
    for i0 in range(0, len(videos), per_batch):
        ids = range(i0, min(i0 + per_batch, len(videos)))
        x = torch.stack([preprocess(videos.read(i, start, frames)) for i in ids]).to(device)  # [B, 3, T, 224, 224]
        f = model.pool(x) if kind == "pool" else model(x)
        out.append(f.double().cpu().numpy())
        if progress is not None:
            progress(len(ids))
    return np.concatenate(out)


def default_frames(*sets: VideoSet, start: int = 0) -> int:
    """Frames every video of every set can give from `start`: the shortest video's, less `start`."""
    return min(min(s.lengths) for s in sets) - start


def compute_fvd(real: VideoSet, fake: VideoSet, model, frames: int | None = None, start: int = 0,
                kind: str = "logits", batch_frames: int = 128, device="cpu", progress=None) -> dict:
    """FVD between two sets with `model` (an InceptionI3d): a JSON-ready dict with `fvd`."""
    if start < 0:
        raise FdmError(f"--start must be >= 0 (got {start})")
    frames = default_frames(real, fake, start=start) if frames is None else frames
    feats = [video_features(s, model, frames, start, kind, batch_frames, device, progress) for s in (real, fake)]
    fits = [gaussian_fit(f) for f in feats]
    return {"fvd": frechet_distance(*fits), "real": real.name, "fake": fake.name,
            "videos": {"real": len(real), "fake": len(fake)}, "frames": frames, "start": start,
            "features": kind, "feature_dim": int(feats[0].shape[1])}
