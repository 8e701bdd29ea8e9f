"""`fdm train --noise-levels per-frame` (Diffusion-Forcing training of the fdm model): the levels
are drawn per frame and independently, observed frames stay clean at level 0, FDM's masks are
unchanged, a run resumes exactly, and its config records the setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule, diffusion_loss
from fdm_engine.diffusion.loss import LEVEL_DRAWS
from fdm_engine.diffusion.schedule import expand_like
from fdm_engine.errors import FdmError
from trainers import TRAINERS, TrainConfig, resolve, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def balls(balls_8px):
    return balls_8px


def small_cfg(data, run_dir, **kw) -> TrainConfig:
    """The tiny preset at 8 px and K = 6 of 12-frame clips (~0.1 s a step)."""
    return TrainConfig.from_dict({**dict(dataset="bouncing-balls", data_dir=str(data), model="fdm", preset="tiny",
                                         run_dir=str(run_dir), steps=4, batch_size=2, save_every=2, log_every=1,
                                         sample_every=0, clip_length=12,
                                         model_config={"image_size": 8, "max_frames": 6}), **kw})


def test_per_frame_levels_are_uniform_and_independent():
    B, F, N = 6000, 6, 1000
    t = LEVEL_DRAWS.get("per-frame")(B, F, N, torch.Generator().manual_seed(0)).double()  # [B, F]
    assert t.shape == (B, F) and t.min() >= 0 and t.max() <= N - 1
    sd = N / 12**0.5
    assert ((t.mean(0) - (N - 1) / 2).abs() < 4 * sd / B**0.5).all(), "each frame's level is uniform on 0..N-1"
    # Chi-square over 10 equal bins per frame (df 9; 27.9 is the 0.999 quantile).
    counts = torch.stack([torch.bincount((t[:, f] * 10 / N).long(), minlength=10) for f in range(F)]).double()
    assert (((counts - B / 10) ** 2 / (B / 10)).sum(1) < 27.9).all()
    # Independence: pairwise correlations ~ 0, and a pair's joint 4 x 4 histogram is the product (df 9;
    # 27.9 again the 0.999 quantile).
    corr = torch.corrcoef(t.T)
    assert (corr - torch.eye(F)).abs().max() < 4 / B**0.5
    q = (t * 4 / N).long()
    joint = torch.bincount(q[:, 0] * 4 + q[:, 1], minlength=16).double()
    assert float(((joint - B / 16) ** 2 / (B / 16)).sum()) < 27.9
    # The per-clip draw (the default) gives one level per example, as before this option existed.
    g = torch.Generator().manual_seed(0)
    assert torch.equal(LEVEL_DRAWS.get("per-clip")(B, F, N, g),
                       torch.randint(0, N, (B,), generator=torch.Generator().manual_seed(0)))


def test_observed_frames_stay_clean_at_level_zero_and_latent_frames_get_their_own():
    """Through the fdm trainer's batches (FDM masks) and diffusion_loss: observed frames are shown
    clean at level 0, every latent frame is noised at its own level, and the target uses it."""
    from trainers.fdm import FDMTrainer

    class Stub:
        max_frames = 6

    trainer = FDMTrainer(type("C", (), {"clip_length": 20, "noise_levels": "per-frame"})(), Stub())
    assert trainer.level_draw() == "per-frame"
    sch = NoiseSchedule(DiffusionConfig())
    seen, distinct = [], 0
    for seed in range(20):
        batch = trainer.make_batch(torch.randn(3, 20, 1, 2, 2), np.random.default_rng(seed))
        noise = torch.randn(batch.x0.shape)
        latent = ~batch.observed & batch.valid

        def model(x, idx, levels, observed, valid=None):
            seen.append((x, levels))
            a, s = (expand_like(c, x) for c in sch.alpha_sigma(levels.double()))
            assert torch.equal(observed, batch.observed)
            assert (levels[observed] == 0).all(), "observed frames at level 0"
            assert torch.equal(x[observed], batch.x0[observed]), "observed frames clean"
            noised = (a * batch.x0 + s * noise).float()
            torch.testing.assert_close(x[latent], noised[latent])
            return torch.where(latent[..., None, None, None], noise, torch.full_like(noise, 7.0))

        loss = diffusion_loss(model, sch, batch.x0, batch.frame_indices, batch.observed, batch.valid,
                              noise=noise, generator=torch.Generator().manual_seed(seed), draw="per-frame")
        assert loss.item() == 0.0, "the target is eps at each frame's own level"
        lv = seen[-1][1]
        distinct += sum(len(set(lv[b][latent[b]].tolist())) > 1 for b in range(3) if latent[b].sum() > 1)
    assert distinct > 20, "latent frames of one example sit at different levels"


@pytest.mark.slow  # ~7 s
def test_per_frame_training_resumes_exactly_and_records_its_setting(balls, tmp_path):
    def losses(run_dir):
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    straight = train(small_cfg(balls, tmp_path / "a", noise_levels="per-frame"), progress=False)
    train(small_cfg(balls, tmp_path / "b", noise_levels="per-frame", steps=2), progress=False)
    resumed = train(small_cfg(balls, tmp_path / "b", noise_levels="per-frame"), progress=False)
    assert resumed.step == 4 and losses(tmp_path / "a") == losses(tmp_path / "b")
    for ema in (False, True):
        a = load_checkpoint(straight.checkpoint, use_ema=ema).model.state_dict()
        b = load_checkpoint(resumed.checkpoint, use_ema=ema).model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"

    saved = TrainConfig.from_json((tmp_path / "a" / "config.json").read_text())
    assert saved == straight.config and saved.noise_levels == "per-frame"
    assert load_checkpoint(straight.checkpoint).extra["train_config"]["noise_levels"] == "per-frame"
    per_clip = train(small_cfg(balls, tmp_path / "c"), progress=False)
    assert per_clip.config.noise_levels is None, "unset, as in configs recorded before the option"
    assert TRAINERS.get("fdm")(per_clip.config, load_checkpoint(per_clip.checkpoint).model).level_draw() == "per-clip"
    assert losses(tmp_path / "c") != losses(tmp_path / "a")
    with pytest.raises(FdmError, match="other settings.*noise_levels"):
        train(small_cfg(balls, tmp_path / "c", noise_levels="per-frame", steps=5), progress=False)


def test_fdm_train_cli_takes_noise_levels(balls, tmp_path, capsys):
    base = ["train", "--dataset", "bouncing-balls", "--data-dir", str(balls), "--preset", "tiny", "--steps", "1",
            "--model-option", "image_size=8", "--model-option", "max_frames=6", "--clip-length", "12",
            "--batch-size", "2", "--sample-every", "0", "--quiet"]
    code, out, err = run_fdm(capsys, *base, "--noise-levels", "per-frame", "--run-dir", str(tmp_path / "r"))
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["noise_levels"] == "per-frame"
    code, _, err = run_fdm(capsys, *base, "--noise-levels", "per-pixel", "--run-dir", str(tmp_path / "s"))
    assert code == 2 and "--noise-levels" in err and "per-pixel" in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("cfg,match", [
    (dict(dataset="d", model="vdm", noise_levels="per-frame"), "applies to --model fdm"),
    (dict(dataset="d", noise_levels="per-pixel"), "--noise-levels must be one of per-clip, per-frame"),
])
def test_bad_noise_levels_are_one_line_errors(cfg, match):
    with pytest.raises(FdmError, match=match) as e:
        resolve(TrainConfig.from_dict(cfg))
    assert "\n" not in str(e.value)
