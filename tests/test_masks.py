"""Training masks: the FDM sampler (docs/training.md) and RaMViD's, against independent re-implementations
written here from the spec text (python's `random`, boolean arrays), compared in distribution."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from fdm_engine.errors import FdmError
from trainers.masks import example_rng, fdm_selection, ramvid_selection, sample_group

N = 4000  # examples per implementation


# ---------------------------------------------------------------------------------------------
# Independent implementations


def spec_group(T: int, K: int, r: random.Random) -> list[int]:
    while True:
        s = r.randint(1, K)
        scale = (T / (s - 0.999)) ** r.random()  # exp(u log m) = m**u
        pos = r.random() * (T - scale * (s - 1))
        idx = [math.floor(pos + i * scale) for i in range(s)]
        if min(idx) >= 0 and max(idx) < T:
            return idx


def spec_masks(T: int, K: int, r: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """(observed, latent) boolean [T] arrays, following docs/training.md line by line."""
    obs, lat = np.zeros(T, bool), np.zeros(T, bool)
    lat[spec_group(T, K, r)] = True
    while True:
        target = obs if r.random() < 0.5 else lat
        g = np.array(spec_group(T, K, r))
        g = g[~(obs | lat)[g]]
        if len(g) > K - obs.sum() - lat.sum():
            return obs, lat
        target[g] = True


def spec_ramvid(F: int, M: int, p: float, r: random.Random) -> np.ndarray:
    obs = np.zeros(F, bool)
    if r.random() >= p:
        obs[r.sample(range(F), r.randint(1, M))] = True
    return obs


# ---------------------------------------------------------------------------------------------
# Statistics helpers


def assert_means_close(name: str, a, b, sigmas: float = 5.0) -> None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-12
    assert abs(a.mean() - b.mean()) < sigmas * se, f"{name}: {a.mean():.4f} vs {b.mean():.4f} (se {se:.4f})"


def assert_histograms_close(name: str, a, b, bins) -> None:
    """Every bin's frequency within 5 standard errors (two samples of size N each)."""
    ha = np.histogram(a, bins=bins)[0] / len(a)
    hb = np.histogram(b, bins=bins)[0] / len(b)
    p = (ha + hb) / 2
    tol = 5 * np.sqrt(p * (1 - p) * (1 / len(a) + 1 / len(b))) + 1e-3
    bad = np.nonzero(np.abs(ha - hb) > tol)[0]
    assert not len(bad), f"{name}: bins {bad.tolist()} differ: {ha[bad]} vs {hb[bad]}"


def fdm_stats(pairs) -> dict[str, np.ndarray]:
    n_obs = np.array([o.sum() for o, _ in pairs])
    n_lat = np.array([lat.sum() for _, lat in pairs])
    used = [np.nonzero(o | lat)[0] for o, lat in pairs]
    lat_idx = [np.nonzero(lat)[0] for _, lat in pairs]
    return {
        "observed": n_obs, "latent": n_lat, "used": n_obs + n_lat,
        "span": np.array([u.max() - u.min() for u in used]),
        "latent_span": np.array([li.max() - li.min() for li in lat_idx]),
        "first": np.array([u.min() for u in used]),
    }


def ours(T: int, K: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        sel = fdm_selection(T, K, rng)
        o, lat = np.zeros(T, bool), np.zeros(T, bool)
        o[sel.observed], lat[sel.latent] = True, True
        out.append((o, lat))
    return out


# ---------------------------------------------------------------------------------------------
# FDM


@pytest.fixture(scope="module")
def fdm_samples():
    T, K = 300, 20
    r = random.Random(12345)
    return fdm_stats(ours(T, K)), fdm_stats([spec_masks(T, K, r) for _ in range(N)])


@pytest.mark.parametrize("stat", ["observed", "latent", "used", "span", "latent_span", "first"])
def test_fdm_mask_means_match_spec(fdm_samples, stat):
    a, b = fdm_samples
    assert_means_close(stat, a[stat], b[stat])


@pytest.mark.parametrize("stat,bins", [
    ("span", np.linspace(0, 300, 11)),
    ("latent_span", np.linspace(0, 300, 11)),
    ("used", np.arange(0.5, 21.5, 1)),
    ("observed", np.arange(-0.5, 20.5, 2)),
    ("latent", np.arange(0.5, 21.5, 2)),
], ids=["span", "latent_span", "used", "observed", "latent"])
def test_fdm_mask_histograms_match_spec(fdm_samples, stat, bins):
    a, b = fdm_samples
    assert_histograms_close(stat, a[stat], b[stat], bins)


def test_fdm_mask_invariants():
    rng = np.random.default_rng(1)
    for T, K in [(300, 20), (20, 20), (11, 10), (1000, 5), (1, 1)]:
        for _ in range(300):
            sel = fdm_selection(T, K, rng)
            assert sel.latent, "at least one latent frame"
            assert sel.observed == sorted(sel.observed) and sel.latent == sorted(sel.latent)
            assert not set(sel.observed) & set(sel.latent)
            assert sel.used <= K
            assert all(0 <= i < T for i in sel.observed + sel.latent)


def test_sample_group_is_evenly_spaced_in_range():
    rng = np.random.default_rng(2)
    for _ in range(500):
        g = sample_group(300, 20, rng)
        assert 1 <= len(g) <= 20 and all(0 <= i < 300 for i in g)
        assert all(b > a for a, b in zip(g, g[1:])), "scale >= 1 gives strictly increasing indices"
        if len(g) > 2:
            gaps = np.diff(g)
            assert gaps.max() - gaps.min() <= 1, "floor of an arithmetic progression"


def test_fdm_masks_are_a_function_of_the_seed():
    a = [fdm_selection(300, 20, example_rng(7, 0, 5, 1)) for _ in range(3)]
    b = [fdm_selection(300, 20, example_rng(7, 0, 5, 1)) for _ in range(3)]
    c = fdm_selection(300, 20, example_rng(7, 1, 5, 1))
    assert a == b and c != a[0]


def test_fdm_masks_reject_clips_shorter_than_k():
    with pytest.raises(FdmError, match="clip length"):
        fdm_selection(10, 20, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# RaMViD


@pytest.mark.parametrize("F,M,p", [(16, 4, 0.25), (20, 4, 0.75), (10, 9, 0.0)])
def test_ramvid_masks_match_reference(F, M, p):
    rng, r = np.random.default_rng(3), random.Random(4)
    a = np.stack([np.isin(np.arange(F), ramvid_selection(F, M, p, rng).observed) for _ in range(N)])
    b = np.stack([spec_ramvid(F, M, p, r) for _ in range(N)])
    assert_means_close("observed count", a.sum(1), b.sum(1))
    assert_means_close("unconditional", a.sum(1) == 0, b.sum(1) == 0)
    assert_histograms_close("count", a.sum(1), b.sum(1), np.arange(-0.5, M + 1.5))
    assert_histograms_close("position", np.nonzero(a)[1], np.nonzero(b)[1], np.arange(-0.5, F + 0.5))
    # and the closed forms: P(no conditioning) = p, E[count] = (1 - p)(M + 1)/2
    se = math.sqrt(p * (1 - p) / N) + 1e-9
    assert abs((a.sum(1) == 0).mean() - p) < 5 * se
    assert abs(a.sum(1).mean() - (1 - p) * (M + 1) / 2) < 0.1


def test_ramvid_selection_partitions_the_clip():
    rng = np.random.default_rng(5)
    for _ in range(200):
        sel = ramvid_selection(10, 4, 0.5, rng)
        assert sorted(sel.observed + sel.latent) == list(range(10)) and sel.latent
        assert len(sel.observed) <= 4


@pytest.mark.parametrize("M,p,match", [(0, 0.2, "max_num_mask_frames"), (10, 0.2, "max_num_mask_frames"),
                                        (4, 1.5, "uncondition_rate")])
def test_ramvid_bad_settings(M, p, match):
    with pytest.raises(FdmError, match=match):
        ramvid_selection(10, M, p, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# Batches built from the masks


def test_fdm_batch_slots_and_padding_from_another_clip():
    from trainers.fdm import FDMTrainer

    class Stub:
        max_frames = 6

    cfg = type("Cfg", (), {"clip_length": 30})()
    trainer = FDMTrainer(cfg, Stub())
    B, T = 3, 30
    clips = torch.arange(B * T, dtype=torch.float32).reshape(B, T, 1, 1, 1).expand(B, T, 1, 2, 2).clone()
    saw_padding = False
    for seed in range(40):
        batch = trainer.make_batch(clips, np.random.default_rng(seed))
        assert batch.x0.shape == (B, 6, 1, 2, 2)
        for b in range(B):
            n = int(batch.valid[b].sum())
            assert batch.valid[b, :n].all() and not batch.valid[b, n:].any(), "real slots first"
            real = batch.frame_indices[b, :n]
            assert (real.diff() > 0).all(), "real frames in index order"
            assert torch.equal(batch.x0[b, :n, 0, 0, 0], clips[b, real, 0, 0, 0])
            assert not batch.observed[b, n:].any(), "padding is neither observed nor in the loss"
            assert (~batch.observed[b, :n]).any(), "some latent frame"
            other = (b + 1) % B
            pad = batch.frame_indices[b, n:]
            assert torch.equal(batch.x0[b, n:, 0, 0, 0], clips[other, pad, 0, 0, 0]), "padding from the next clip"
            saw_padding |= n < 6
    assert saw_padding
