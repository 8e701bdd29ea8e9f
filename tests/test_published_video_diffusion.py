"""video_diffusion (swookey-thinky) checkpoints: its VDM config, the published key layout, the
log-SNR schedule mapping, bad inputs, round trip and sampling.

The published state dicts are built here (tests/published_helpers.py) from the published module
tree as its code lays it out; no published code is imported (the equivalence with the published
network is tests/test_published_others_equivalence.py, where a local copy is available).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.diffusion.schedule import DiffusionConfig, NoiseSchedule, logsnr_grid
from fdm_engine.errors import FdmError
from fdm_engine.published import load_published
from fdm_engine.published.yaml_subset import parse_yaml
from published_helpers import Payload, to_yaml, vd_config, write_vd_published

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli_error(capsys, *argv) -> str:
    code, _, err = run_fdm(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- the config reader ----------------------------------------------------------------------------


def test_yaml_subset_reads_the_published_layout():
    config = vd_config()
    assert parse_yaml(to_yaml(config), "x") == config
    text = "a: 1  # one\nb:\n  - x: 'p # q'\n    y: [1, 2.5, 1e-4]\n  - 3\nc: ~\nd: TRUE\ne: {}\n"
    assert parse_yaml(text, "x") == {"a": 1, "b": [{"x": "p # q", "y": [1, 2.5, 1e-4]}, 3], "c": None,
                                     "d": True, "e": {}}
    assert parse_yaml("a: [1, 2, ]\n", "x") == {"a": [1, 2]}  # YAML's trailing comma


@pytest.mark.parametrize("text,needle", [
    ("a: &anchor 1\n", "'&' is not supported"),
    ("a: {b: 1}\n", "flow mappings"),
    ("a: 1\n  b: 2\n", "line 2: unexpected indentation"),
    ("a: 1\na: 2\n", "key 'a' appears twice"),
    ("a: [1, 2\n", "flow list must close"),
    ("a: [1, , 2]\n", "line 1: an empty item"),
])
def test_yaml_subset_refuses_what_it_does_not_read(text, needle):
    with pytest.raises(FdmError, match=needle):
        parse_yaml(text, "cfg.yaml")


# ---- the log-SNR schedule -------------------------------------------------------------------------


def test_logsnr_grid_is_the_cosine_schedule_the_sampler_steps_through():
    n = 1024  # the published num_scales: u = (i+1)/n is exact, so the grid is lambda((i+1)/n)
    lam = logsnr_grid("logsnr-cosine", n, -20.0, 20.0).double()
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    u = (np.arange(n) + 1) / n
    want = -2 * np.log(np.tan(a * u + b))
    assert np.abs(lam.numpy() - want).max() < 1e-4 * np.abs(want).max()
    assert lam[-1].item() == pytest.approx(-20.0, abs=1e-2) and torch.all(lam[1:] < lam[:-1])
    lin = logsnr_grid("logsnr-linear", 8, -4.0, 4.0)
    assert torch.allclose(lin, torch.tensor([4 - 8 * (i + 1) / 8 for i in range(8)]))


def test_logsnr_schedule_alpha_bar_is_sigmoid_of_the_grid():
    cfg = DiffusionConfig(schedule="logsnr-cosine", num_steps=100, prediction="v", logsnr_min=-20, logsnr_max=20)
    sched = NoiseSchedule(cfg)
    lam = logsnr_grid("logsnr-cosine", 100, -20.0, 20.0).double()
    assert torch.allclose(sched.alpha_bar(torch.arange(100.0)), torch.sigmoid(lam), rtol=1e-9, atol=0)
    assert torch.allclose(sched.log_snr(torch.arange(100.0)), lam, rtol=0, atol=1e-6)
    with pytest.raises(FdmError, match="logsnr_min < logsnr_max"):
        DiffusionConfig(schedule="logsnr-cosine", logsnr_min=5, logsnr_max=5)


# ---- the published layout loads -------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {},
    {"resblock_updown": True, "resamp_with_conv": True, "use_scale_shift_norm": False, "mlp_layers": 1},
    {"is_learned_sigma": True, "num_resnet_blocks": [1, 2]},
])
def test_published_layout_loads(tmp_path, params):
    config = vd_config(**params)
    ckpt, cfg = write_vd_published(tmp_path, config)
    notes = []
    loaded = load_published(ckpt, "video-diffusion", config_file=cfg, notify=notes.append)
    model = loaded.model
    assert loaded.model_name == "vd-unet" and loaded.diffusion.prediction == "v"
    assert loaded.diffusion.schedule == "logsnr-cosine" and loaded.diffusion.num_steps == 64
    assert loaded.extra["guidance"] == {"method": "reconstruction", "weight": 2.0}
    assert loaded.extra["step"] == 100 and loaded.extra["max_latent_frames"] == 4
    state = torch.load(ckpt, weights_only=True)["model_state_dict"]
    ours = model.state_dict()
    # A few tensors by their published names, bit for bit (qkv: a 1x1 Conv1d as our Linear).
    assert torch.equal(ours["in_conv.weight"], state["_score_network._initial_convolution.weight"])
    assert torch.equal(ours["middle.2.qkv.weight"], state["_score_network.middle.2.fn._qkv.weight"][:, :, 0])
    assert torch.equal(ours["middle.2.rel_k"], state["_score_network.middle.2.fn._attention._k_embeddings_table"])
    assert torch.equal(ours["downs.0.0.emb.0.2.weight"], state["_score_network.downs.0.0.emb_layers.0.fc2.weight"])
    if params.get("is_learned_sigma"):
        assert torch.equal(ours["out_conv.weight"], state["_score_network.final_projection.2.weight"][:1])
        assert any("is_learned_sigma" in n for n in notes)
    x = torch.randn(2, 4, 1, 16, 16)
    out = model(x, torch.arange(4).repeat(2, 1), torch.full((2, 4), 10.0), torch.zeros(2, 4, dtype=torch.bool))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_padding_does_not_reach_real_frames(tmp_path):
    ckpt, cfg = write_vd_published(tmp_path)
    model = load_published(ckpt, "video-diffusion", config_file=cfg, notify=lambda _: None).model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 1, 16, 16, generator=g)
    valid = torch.tensor([[True, True, False, True, True]])
    idx = torch.tensor([[3, 4, 0, 5, 6]])
    lv = torch.full((1, 5), 20.0)
    obs = torch.zeros(1, 5, dtype=torch.bool)
    a = model(x, idx, lv, obs, valid)
    x2 = x.clone()
    x2[0, 2] = 100.0
    b = model(x2, idx, lv, obs, valid)
    alone = model(x[:, valid[0]], idx[:, valid[0]], lv[:, :4], obs[:, :4])
    assert torch.equal(a[valid], b[valid]) and torch.allclose(a[0, valid[0]], alone[0], atol=1e-5)


def test_relative_positions_follow_frame_indices(tmp_path):
    """Only index differences enter: a shift of every index changes nothing; a gap does."""
    ckpt, cfg = write_vd_published(tmp_path)
    model = load_published(ckpt, "video-diffusion", config_file=cfg, notify=lambda _: None).model
    x = torch.randn(1, 4, 1, 16, 16)
    lv, obs = torch.full((1, 4), 30.0), torch.zeros(1, 4, dtype=torch.bool)
    a = model(x, torch.tensor([[0, 1, 2, 3]]), lv, obs)
    b = model(x, torch.tensor([[10, 11, 12, 13]]), lv, obs)
    c = model(x, torch.tensor([[0, 1, 2, 9]]), lv, obs)
    assert torch.equal(a, b) and not torch.allclose(a, c)


# ---- bad inputs -----------------------------------------------------------------------------------


def test_mismatching_config_names_the_first_key_and_both_shapes(capsys, tmp_path):
    ckpt, cfg = write_vd_published(tmp_path)
    wider = vd_config(features=64)
    wider["diffusion"]["score_network"]["params"]["conditioning"]["projections"]["timestep"]["params"][
        "num_features"] = 64
    cfg.write_text(to_yaml(wider))
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert str(ckpt) in err and "'_projections.timestep._projection.1.weight' has shape [128, 32] in the file but " \
                                 "[256, 64]" in err
    cfg.write_text(to_yaml(vd_config(num_scales=100)))
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert "'_noise_scheduler.gammas' has shape [65]" in err and "needs [101]" in err
    state = torch.load(ckpt, weights_only=True)
    del state["model_state_dict"]["_score_network.middle.2.fn._attention._k_embeddings_table"]
    torch.save(state, ckpt)
    cfg.write_text(to_yaml(vd_config()))
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert "missing key 'middle.2.fn._attention._k_embeddings_table'" in err and "[2, 7, 32]" in err


@pytest.mark.parametrize("change,needle", [
    ({"resnet_block_type": "ddpm"}, "resnet_block_type 'ddpm'"),
    ({"is_class_conditional": True}, "is_class_conditional True"),
    ({"channel_multipliers": [2, 2]}, "channel_mult must start with 1"),
    ({"num_features": 48}, "time embedding is 32 x 4 wide"),
])
def test_refuses_what_it_cannot_reproduce(capsys, tmp_path, change, needle):
    ckpt, cfg = write_vd_published(tmp_path)
    config = vd_config()
    config["diffusion"]["score_network"]["params"].update(change)
    cfg.write_text(to_yaml(config))
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert str(cfg) in err and needle in err


def test_other_families_and_missing_config(capsys, tmp_path):
    ckpt, cfg = write_vd_published(tmp_path)
    dst = tmp_path / "x.safetensors"
    err = _cli_error(capsys, "convert", ckpt, dst)  # recognised, but the config is needed
    assert str(ckpt) in err and "needs --config" in err
    for target, needle in (("video_diffusion.score_networks.unet_factorized3d.UNet", "--from fdm"),
                           ("video_diffusion.score_networks.unet_pseudo3d.Unet", "Make-A-Video"),
                           ("image_diffusion.score_networks.unet.Unet", "no fdm architecture corresponds")):
        config = copy.deepcopy(vd_config())
        config["diffusion"]["score_network"]["target"] = target
        cfg.write_text(to_yaml(config))
        err = _cli_error(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", cfg)
        assert str(ckpt) in err and target in err and needle in err
    cfg.write_text("diffusion:\n  parameterization: v\n")
    err = _cli_error(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", cfg)
    assert str(cfg) in err and "no diffusion.score_network.target" in err
    err = _cli_error(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", tmp_path / "nope.yaml")
    assert "nope.yaml" in err
    err = _cli_error(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", cfg, "--flags", "--a 1")
    assert "not --flags" in err


def test_refuses_a_pickle_that_would_run_code(capsys, tmp_path):
    _, cfg = write_vd_published(tmp_path)
    bad, marker = tmp_path / "diffusion-1.pt", tmp_path / "pwned"
    torch.save({"step": 1, "model_state_dict": {"x": Payload(marker)}, "config": {"diffusion": {}}}, bad)
    err = _cli_error(capsys, "convert", bad, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert str(bad) in err and "could run code" in err and not marker.exists()


# ---- round trip and sampling ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_converted_round_trips_bit_exactly(capsys, tmp_path, suffix):
    ckpt, cfg = write_vd_published(tmp_path)
    dst = tmp_path / f"vdm{suffix}"
    code, _, err = run_fdm(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", cfg)
    assert code == 0, err
    want = load_published(ckpt, "video-diffusion", config_file=cfg, notify=lambda _: None)
    got = load_checkpoint(dst)
    assert got.model_name == "vd-unet" and got.diffusion == want.diffusion
    assert got.extra["published"]["format"] == "video-diffusion" and got.extra["guidance"]["method"] == "reconstruction"
    mine, theirs = got.model.state_dict(), want.model.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    x = torch.randn(1, 4, 1, 16, 16)
    args = (torch.arange(4)[None], torch.full((1, 4), 5.0), torch.zeros(1, 4, dtype=torch.bool))
    assert torch.equal(got.model(x, *args), want.model(x, *args))


def test_sample_takes_the_checkpoint_with_its_config_as_it_takes_the_conversion(capsys, tmp_path):
    ckpt, cfg = write_vd_published(tmp_path, vd_config(num_scales=8))
    dst = tmp_path / "vdm.safetensors"
    assert run_fdm(capsys, "convert", ckpt, dst, "--from", "video-diffusion", "--config", cfg)[0] == 0
    frames = []
    for src, extra in ((dst, []), (ckpt, ["--config", str(cfg)])):
        out = tmp_path / f"run-{len(frames)}"
        code, _, err = run_fdm(capsys, "sample", src, *extra, "--length", "6", "--n-obs", "0", "--num-videos", "1",
                               "--sampler", "ddpm", "--steps", "8", "--spacing", "linspace", "--quiet",
                               "--format", "npz", "--out", out)
        assert code == 0, err
        frames.append(np.load(out / "video_0000.npz")["frames"])
    assert frames[0].shape == (6, 16, 16, 1) and np.array_equal(frames[0], frames[1])


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c["diffusion"]["score_network"].update(params=None), "diffusion.score_network.params"),
    (lambda c: c["diffusion"]["score_network"]["params"]["conditioning"]["projections"].update(timestep="foo"),
     "conditioning.projections.timestep must be a mapping"),
    (lambda c: c["diffusion"].update(noise_scheduler=[1]), "diffusion.noise_scheduler must be a mapping"),
], ids=["params-empty", "projection-a-string", "scheduler-a-list"])
def test_a_section_that_is_not_a_mapping_is_one_line(capsys, tmp_path, edit, needle):
    ckpt, cfg = write_vd_published(tmp_path)
    config = vd_config()
    edit(config)
    cfg.write_text(to_yaml(config))
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "video-diffusion", "--config", cfg)
    assert str(cfg) in err and needle in err
