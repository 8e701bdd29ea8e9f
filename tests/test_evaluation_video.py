"""PSNR / SSIM against hand-computed values, revisit consistency, and `evaluate_samples` on a
folder laid out as `fdm sample` writes it, conditioned on a procedural revisit-world dataset."""

import json
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fdm_engine.errors import FdmError
from fdm_engine.evaluation import evaluate_samples, psnr, revisit_summary, revisit_values, ssim
from fdm_engine.evaluation.video_metrics import revisit_pairs

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def test_psnr_of_a_known_mse():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = np.full((2, 4, 4, 3), 10, np.uint8)  # MSE = 100
    assert psnr(a, b) == pytest.approx([10 * math.log10(255**2 / 100)] * 2)  # 28.1308 dB
    b[1, 0, 0, 0] = 0  # one pixel off by 10 in 48: MSE = 100 * 47 / 48
    assert psnr(a, b)[1] == pytest.approx(10 * math.log10(255**2 / (100 * 47 / 48)))
    assert psnr(a, a).tolist() == [100.0, 100.0]  # identical frames: the cap, not infinity


def test_ssim_of_identical_frames_is_one():
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert ssim(x, x) == pytest.approx([1.0] * 3, abs=1e-12)


def test_ssim_of_constant_frames_by_hand():
    a = np.full((16, 16, 1), 100, np.uint8)
    b = np.full((16, 16, 1), 120, np.uint8)
    # flat frames: no variance, so SSIM is the luminance term alone
    by_hand = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)  # 0.983611...
    assert float(ssim(a, b)) == pytest.approx(by_hand, rel=1e-12)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one grey frame via scipy's Gaussian filter (truncate 3.5 -> 11 taps at sigma 1.5),
    cropping the 5-pixel border where the window leaves the frame."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def f(z):
        return gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return float((((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))).mean())


def test_ssim_matches_an_independent_reference_and_a_brightness_shift():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 200, (24, 20), dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, x.shape), 0, 255).astype(np.uint8)
    assert float(ssim(x[..., None], y[..., None])) == pytest.approx(reference_ssim(x, y), rel=1e-10)
    # a constant shift keeps variance and covariance: only the luminance term is left
    shifted = x + np.uint8(30)
    mx = gaussian_filter(x.astype(np.float64), 1.5, truncate=3.5)[5:-5, 5:-5]
    by_hand = ((2 * mx * (mx + 30) + C1) / (mx**2 + (mx + 30) ** 2 + C1)).mean()
    assert float(ssim(x[..., None], shifted[..., None])) == pytest.approx(by_hand, rel=1e-10)


def test_ssim_averages_channels_and_fits_small_frames():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    per_channel = [reference_ssim(x[..., c], y[..., c]) for c in range(3)]
    assert float(ssim(x, y)) == pytest.approx(np.mean(per_channel), rel=1e-10)
    small = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    assert float(ssim(small, small)) == pytest.approx(1.0)  # 7x7 window on 8x8 frames


def test_revisit_pairs_and_values():
    pose = np.array([[0, 0], [5, 0], [0, 0], [5, 0], [0, 0]])
    pairs = revisit_pairs(pose, n_obs=2).tolist()
    assert pairs == [[0, 2], [0, 4], [1, 3], [2, 4]]  # later frame generated (>= 2)
    truth = np.zeros((5, 4, 4, 1), np.uint8)
    truth[1] = truth[3] = 50  # equal poses, equal frames
    frames = truth.copy()
    frames[4] = 10  # frame 4 forgets what frames 0 and 2 showed: MSE 100 against both
    v = revisit_values(frames, truth, pose, n_obs=2)
    summary = revisit_summary([v])
    assert summary["pairs"] == 4 and summary["truth_psnr"] == 100.0
    bad = 10 * math.log10(255**2 / 100)
    assert summary["to_given"] == pytest.approx((100 + bad + 100) / 3)  # pairs (0,2), (0,4), (1,3)
    assert summary["among_generated"] == pytest.approx(bad)
    assert revisit_summary([revisit_values(frames, frames, np.arange(5)[:, None], 2)]) is None


@pytest.fixture(scope="module")
def revisit_run(tmp_path_factory):
    """A revisit-world test split and a fake `fdm sample` output folder conditioned on it."""
    from fdm_engine.datasets import make_dataset, open_dataset
    from fdm_engine.video_io import to_uint8

    root = tmp_path_factory.mktemp("eval_video")
    data = make_dataset("revisit-world", root / "data", num_videos=1, length=40, size=16, num_test=2, seed=0)
    ds = open_dataset("revisit-world", data, split="test")
    truth = [to_uint8(ds.clip(i, 40)) for i in range(2)]
    samples = root / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for i, t in enumerate(truth):
        fake = t.copy()
        fake[8:] = np.clip(fake[8:].astype(int) + rng.integers(-20, 21, fake[8:].shape), 0, 255)
        np.savez_compressed(samples / f"video_{i:04d}.npz", frames=fake)
    plan = {"config": {"model": "x.pt", "n_obs": 8, "obs": "revisit-world:test", "data_dir": str(data)}}
    (samples / "plan.json").write_text(json.dumps(plan))
    poses = [ds.state(i)["pose"] for i in range(2)]
    return samples, data, truth, poses


def test_evaluate_samples_against_the_dataset_they_continue(revisit_run):
    samples, _, truth, poses = revisit_run
    r = evaluate_samples(samples)
    assert r["videos"] == 2 and r["length"] == 40 and r["n_obs"] == 8
    assert r["psnr"]["per_frame"][:8] == [100.0] * 8 and r["ssim"]["per_frame"][0] == pytest.approx(1.0)
    assert 20 < r["psnr"]["mean"] < 40 and 0 < r["ssim"]["mean"] < 1
    expected_pairs = sum(len(revisit_pairs(p, 8)) for p in poses)
    assert expected_pairs > 0 and r["revisit"]["pairs"] == expected_pairs
    assert r["revisit"]["truth_psnr"] == 100.0 and r["revisit"]["psnr"] < 100
    json.dumps(r)  # plain JSON all through


def test_perfect_samples_score_perfectly(revisit_run, tmp_path):
    _, data, truth, _ = revisit_run
    for i, t in enumerate(truth):
        np.savez_compressed(tmp_path / f"video_{i:04d}.npz", frames=t)
    r = evaluate_samples(tmp_path, data="revisit-world:test", data_dir=str(data), n_obs=8)
    assert r["psnr"]["mean"] == 100.0 and r["ssim"]["mean"] == pytest.approx(1.0)
    assert r["revisit"]["psnr"] == 100.0


def test_missing_ground_truth_is_a_user_error(tmp_path):
    np.savez_compressed(tmp_path / "video_0000.npz", frames=np.zeros((4, 16, 16, 1), np.uint8))
    (tmp_path / "plan.json").write_text(json.dumps({"config": {"model": "oracle:ou", "n_obs": 2, "obs": None}}))
    with pytest.raises(FdmError, match="oracle has no ground truth"):
        evaluate_samples(tmp_path)
    with pytest.raises(FdmError, match="no video_NNNN"):
        evaluate_samples(tmp_path / "nothing")
