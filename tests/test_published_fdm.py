"""Published FDM checkpoints (TrainLoop.save files): read safely, converted bit-exactly, sampled
with the published conventions, and equal to the published UNetVideoModel where a local copy of
its code is present (FDM_PUBLISHED_SRC)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import run_fdm
from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.errors import FdmError
from fdm_engine.published import (PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, detect_format,
                                  load_published, read_published)
from fdm_engine.published.keymap import flags_like, parse_flags
from fdm_engine.models.attention_published import masked_group_norm
from fdm_engine.models.fdm_unet import FDMUNetConfig, network_timesteps
from fdm_engine.published.fdm import published_key
from published_helpers import (FDM_REPO, fdm_published_config, fdm_published_shapes, published_module,
                               random_state, write_fdm_published)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return write_fdm_published(tmp_path / "ema_0.9999_000010.pt")


def _inputs(seed=0, B=2, F=4, size=32, n_obs=2, level=400.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, 3, size, size, generator=g)
    frame_indices = torch.stack([torch.randperm(30, generator=g)[:F] for _ in range(B)])  # [B, F]
    observed = torch.zeros(B, F, dtype=torch.bool)
    observed[:, :n_obs] = True
    levels = torch.where(observed, torch.zeros(B, F), torch.full((B, F), level))  # the contract: 0 on observed
    return x, frame_indices, levels, observed


# ---------------------------------------------------------------------------------------------
# Reading and converting


def test_layout_maps_onto_our_model_one_to_one(ckpt):
    """Every published tensor lands on exactly one of our weights, unchanged."""
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    loaded = load_published(ckpt, notify=lambda line: None)
    ours = loaded.model.state_dict()
    assert len(ours) == len(source)
    for key, value in ours.items():
        assert torch.equal(value, source[published_key(key)]), key
    assert loaded.used_ema and loaded.extra["dataset"] == "carla_no_traffic" and loaded.extra["step"] == 10
    assert loaded.model.config.attention == "published" and loaded.model.config.observed_timestep == "job"
    assert loaded.model.max_frames == 4 and loaded.model.image_size == 32


@pytest.mark.parametrize("cfg,want", [
    ({}, dict(schedule="linear", num_steps=1000, prediction="eps")),
    (dict(noise_schedule="cosine", diffusion_steps=250, predict_xstart=True),
     dict(schedule="cosine", num_steps=250, prediction="x0")),
], ids=["defaults", "cosine-250-x0"])
def test_diffusion_settings_come_from_the_config(tmp_path, cfg, want):
    path = write_fdm_published(tmp_path / "model000010.pt", **cfg)
    loaded = load_published(path, notify=lambda line: None)
    assert {k: getattr(loaded.diffusion, k) for k in want} == want
    assert not loaded.used_ema
    # rescale_timesteps: the net sees t * 1000 / diffusion_steps, as improved DDPM feeds it.
    assert loaded.model.config.timestep_scale == 1000 / want["num_steps"]


def test_network_timesteps():
    """What the time embedding sees: observed and padding slots take the job's level under the
    published convention, and improved DDPM's rescale_timesteps multiplies by 1000 / N."""
    levels = torch.tensor([[0.0, 0.0, 60.0, 60.0, 0.0], [0.0, 7.0, 7.0, 7.0, 7.0]])
    observed = torch.tensor([[True, True, False, False, False], [True, False, False, False, False]])
    valid = torch.tensor([[True, True, True, True, False], [True] * 5])
    job = FDMUNetConfig(observed_timestep="job", timestep_scale=4.0)
    want = 4 * torch.tensor([[60.0] * 5, [7.0] * 5])
    assert torch.equal(network_timesteps(job, levels, observed, valid), want)
    assert torch.equal(network_timesteps(FDMUNetConfig(), levels, observed, valid), levels)


def test_observed_frames_see_the_jobs_timestep(ckpt):
    """The published net gave observed frames the job's timestep: what the caller passes for
    them (0 under our contract) does not matter, and it differs from giving them level 0."""
    model = load_published(ckpt, notify=print).model
    x, fi, t, obs = _inputs()
    job = torch.where(obs, torch.full_like(t, 400.0), t)
    with torch.no_grad():
        out = model(x, fi, t, obs)
        assert torch.equal(out, model(x, fi, job, obs))
        zero = model.config.replace(observed_timestep="zero")
        other = type(model)(zero).eval()
        other.load_state_dict(model.state_dict())
        assert (other(x, fi, t, obs) - out)[~obs].abs().max() > 1e-3


def test_masked_group_norm_is_group_norm_of_the_kept_positions():
    g = torch.Generator().manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight, generator=g), torch.nn.init.normal_(norm.bias, generator=g)
    x = torch.randn(3, 8, 7, generator=g)  # [N, C, L]
    keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False, True, True, False, True, False, False]])
    out = masked_group_norm(x, norm, keep)
    for n in range(3):
        alone = norm(x[n:n + 1, :, keep[n]])
        torch.testing.assert_close(out[n:n + 1, :, keep[n]], alone, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_the_job(tmp_path):
    """A job padded to share a batch computes what it computes alone (as the published sampler
    ran it): padding is masked out of the attention and of the temporal norm's statistics.
    (Weights at scale 0.1: at 0.2 the random net amplifies float rounding to ~1e-4.)"""
    state = random_state(fdm_published_shapes(), scale=0.1)
    model = load_published(write_fdm_published(tmp_path / "model000001.pt", state=state), notify=print).model
    x, fi, t, obs = _inputs(seed=2, F=6)
    valid = torch.ones_like(obs)
    valid[:, 4:] = False
    with torch.no_grad():
        padded = model(x, fi, t, obs, valid=valid)[:, :4]
        alone = model(x[:, :4], fi[:, :4], t[:, :4], obs[:, :4])
    assert (padded - alone).abs().max() <= 1e-5 * alone.abs().max()
    with torch.no_grad():  # and the padding does matter where it is not masked out
        unmasked = model(x, fi, t, obs)[:, :4]
    assert (unmasked - alone).abs().max() > 1e-3 * alone.abs().max()


def test_learn_sigma_keeps_the_mean_channels(tmp_path):
    path = write_fdm_published(tmp_path / "ema_0.9999_000010.pt", learn_sigma=True)
    source = torch.load(path, weights_only=True)["state_dict"]
    notes = []
    model = load_published(path, notify=notes.append).model
    assert torch.equal(model.out_conv.weight, source["out.2.weight"][:3])
    assert torch.equal(model.out_conv.bias, source["out.2.bias"][:3])
    assert len(notes) == 1 and "learn_sigma" in notes[0]


def test_convert_round_trips_bit_exactly(capsys, ckpt, tmp_path):
    dst = tmp_path / "carla.safetensors"
    code, out, err = run_fdm(capsys, "convert", ckpt, dst)  # detected as published FDM
    assert code == 0, err
    assert "wrote" in out and "published fdm" in out
    direct = load_published(ckpt, notify=print)
    converted = load_checkpoint(dst)
    for key, value in direct.model.state_dict().items():
        assert torch.equal(converted.model.state_dict()[key], value), key
    assert converted.model.config == direct.model.config
    assert converted.diffusion == direct.diffusion
    assert converted.extra["published"]["conventions"]["observed_timestep"] == "job"
    x, fi, t, obs = _inputs()
    with torch.no_grad():
        assert torch.equal(converted.model(x, fi, t, obs), direct.model(x, fi, t, obs))
    # --from fdm writes the same tensors; and back to .pt, still bit-exact
    named = tmp_path / "named.safetensors"
    assert run_fdm(capsys, "convert", ckpt, named, "--from", "fdm")[0] == 0
    again = tmp_path / "carla.pt"
    assert run_fdm(capsys, "convert", dst, again)[0] == 0
    first, second = load_file(dst), load_file(named)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    back = torch.load(again, weights_only=True)["state_dict"]
    assert all(torch.equal(back[k.removeprefix("model.")], v) for k, v in first.items())


def test_sample_reads_the_published_file_directly(ckpt):
    from fdm_engine.denoisers import load_denoiser

    assert detect_format(ckpt) == "fdm"
    loaded = load_denoiser(str(ckpt))
    assert loaded.model_name == "fdm" and loaded.extra["published"]["format"] == "fdm"


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, exit 2


class _Payload:
    """Unpickling this creates `marker`: what a hostile checkpoint would do, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cli_error(capsys, *argv) -> str:
    code, out, err = run_fdm(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_pickle_that_would_run_code_is_refused(capsys, tmp_path):
    bad, marker = tmp_path / "ema_0.9999_000010.pt", tmp_path / "pwned"
    state = random_state(fdm_published_shapes())
    state["out.2.bias"] = _Payload(marker)
    torch.save({"state_dict": state, "config": fdm_published_config(), "step": 1}, bad)
    for argv in (["convert", bad, tmp_path / "x.safetensors"],
                 ["convert", bad, tmp_path / "x.safetensors", "--from", "fdm"],
                 ["sample", bad, "--n-obs", "0", "--length", "8", "--out", tmp_path / "s"]):
        err = _cli_error(capsys, *argv)
        assert str(bad) in err and "refuses to load" in err and "could run code" in err
    assert not marker.exists()


def test_wrong_shape_names_the_first_key_and_both_shapes(capsys, tmp_path):
    # a file whose weights are a 64-channel net while its config says 32
    state = random_state(fdm_published_shapes(num_channels=64))
    path = write_fdm_published(tmp_path / "ema_0.9999_000010.pt", state=state)
    err = _cli_error(capsys, "convert", path, tmp_path / "x.safetensors")
    assert "'time_embed.0.weight' has shape [256, 64] in the file but [128, 32]" in err and str(path) in err


@pytest.mark.parametrize("edit,expect", [
    (lambda s: s.pop("middle_block.1.temporal_attention.rpe_v.rpe_net.out.bias"),
     "missing key 'middle_block.1.temporal_attention.rpe_v.rpe_net.out.bias'"),
    (lambda s: s.update({"label_emb.weight": torch.zeros(3, 4)}), "unexpected key 'label_emb.weight'"),
    (lambda s: s.update({"out.2.bias": "not a tensor"}), "'out.2.bias' holds a str, not a tensor"),
], ids=["missing", "unexpected", "not-a-tensor"])
def test_keys_that_do_not_fit(capsys, tmp_path, edit, expect):
    state = random_state(fdm_published_shapes())
    edit(state)
    path = write_fdm_published(tmp_path / "model000010.pt", state=state)
    err = _cli_error(capsys, "convert", path, tmp_path / "x.safetensors", "--from", "fdm")
    assert expect in err and str(path) in err


@pytest.mark.parametrize("cfg,expect", [
    (dict(use_rpe_net=False), "use_rpe_net False"),
    (dict(noise_schedule="sqrt"), "noise_schedule 'sqrt'"),
    (dict(image_size=48), "image_size 48"),
], ids=["no-rpe-net", "schedule", "image-size"])
def test_configs_fdm_cannot_build(capsys, tmp_path, cfg, expect):
    state = random_state(fdm_published_shapes())
    path = write_fdm_published(tmp_path / "model000010.pt", state=state, **cfg)
    err = _cli_error(capsys, "sample", path, "--n-obs", "0", "--length", "8", "--out", tmp_path / "s")
    assert expect in err and str(path) in err


def test_unknown_from_and_stray_flags(capsys, ckpt, tmp_path):
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "nope")
    assert "--from 'nope': unknown checkpoint format" in err and "fdm" in err
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--flags", "--image_size 32")
    assert "pass --from NAME" in err
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "fdm",
                     "--flags", "--image_size")
    assert "--image_size needs a value" in err
    err = _cli_error(capsys, "convert", ckpt, tmp_path / "x.safetensors", "--from", "fdm",
                     "--flags", "--num_chanels 64")
    assert "unknown flag --num_chanels" in err


def test_flags_override_the_saved_config(ckpt, tmp_path):
    """--flags re-types values like the published defaults (here: a wrong override fails on shapes)."""
    with pytest.raises(FdmError, match=r"has shape \[128, 32\] in the file but \[256, 64\]"):
        read_published(ckpt, "fdm", flags="--num_channels 64")
    def parse(text, defaults):
        return parse_flags(text, flags_like(defaults), f"{ckpt}: --flags")

    cfg = parse("--learn_sigma yes --dropout=0.1 --attention_res 8", fdm_published_config())  # a unique prefix
    assert cfg["learn_sigma"] is True and cfg["dropout"] == 0.1 and cfg["attention_resolutions"] == "8"
    with pytest.raises(FdmError, match="--num_channels 'wide' is not a valid value"):
        parse("--num_channels wide", fdm_published_config())
    lists = parse("--device_ids 0 1 2 --temporal_layer 'bi-s4d' --dims=4",
                  {"device_ids": [0], "temporal_layer": "attn", "dims": [1, 2]})
    assert lists == {"device_ids": [0, 1, 2], "temporal_layer": "bi-s4d", "dims": [4]}


class _NeedsFlags(PublishedFormat):
    needs, needs_hint = "flags", '--flags "--image_size 64"'

    def read(self, path, flags, config_file) -> LoadedPublished:  # pragma: no cover - never reached
        raise AssertionError("read without flags")


class _NeedsConfig(_NeedsFlags):
    needs, needs_hint = "config", "its train.yaml"


@pytest.mark.parametrize("fmt,expect", [(_NeedsFlags(), "needs --flags"), (_NeedsConfig(), "needs --config")],
                         ids=["flags", "config"])
def test_missing_flags_or_config(capsys, monkeypatch, tmp_path, fmt, expect):
    monkeypatch.setitem(PUBLISHED_FORMATS._items, "test-format", fmt)
    src = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, src)
    err = _cli_error(capsys, "convert", src, tmp_path / "x.safetensors", "--from", "test-format")
    assert expect in err and str(src) in err and fmt.needs_hint in err
    if fmt.needs == "config":
        err = _cli_error(capsys, "convert", src, tmp_path / "x.safetensors", "--from", "test-format",
                         "--config", tmp_path / "absent.yaml")
        assert "absent.yaml: no such file" in err


# ---------------------------------------------------------------------------------------------
# End to end: the user's bare command on a published file and a carla-format dataset


@pytest.mark.slow
def test_bare_sample_command_on_a_published_checkpoint(capsys, monkeypatch, tmp_path):
    data = tmp_path / "data"
    code, out, err = run_fdm(capsys, "data", "make", "bouncing-balls", "--out", data / "carla_no_traffic",
                             "--format", "carla", "--num-videos", "2", "--num-test", "1", "--length", "10",
                             "--size", "32", "--quiet")
    assert code == 0, err
    ckpt = write_fdm_published(tmp_path / "ema_0.9999_000010.pt")
    monkeypatch.setenv("FDM_DATA_DIR", str(data))
    out_dir = tmp_path / "samples"
    code, out, err = run_fdm(capsys, "sample", ckpt, "--scheme", "hierarchy-2", "--n-obs", "3", "--steps", "2",
                             "--out", out_dir, "--format", "npz", "--quiet")
    assert code == 0, err
    video = dict(__import__("numpy").load(out_dir / "video_0000.npz"))
    frames = next(v for k, v in video.items() if v.ndim >= 4)
    assert frames.shape[0] == 10  # the test video's length, taken from the dataset the config names
    import json

    plan = json.loads((out_dir / "plan.json").read_text())
    assert plan["conditioning"] == "carla_no_traffic:test" and plan["max_frames"] == 4


# ---------------------------------------------------------------------------------------------
# Equivalence with the published code (where FDM_PUBLISHED_SRC holds a copy of it)


def _published_fdm_net(cfg: dict, state: dict):
    script_util = published_module(FDM_REPO, "improved_diffusion.script_util")
    keys = script_util.model_and_diffusion_defaults().keys()
    net, _ = script_util.create_model_and_diffusion(**{k: cfg[k] for k in keys})
    net.load_state_dict(state)
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize("cfg,padding", [(dict(), 0), (dict(num_res_blocks=2, diffusion_steps=250), 0),
                                         (dict(), 2)], ids=["carla-like", "2rb-250", "padding"])
def test_equals_the_published_unet(tmp_path, cfg, padding):
    """Random weights, same inputs: the published UNetVideoModel (every frame at the job's
    timestep, observed frames clean, attention mask over observed+latent frames) vs ours on the
    latent frames. Weights at scale 0.1: larger ones make the random net chaotic (at 0.2 the
    published net itself moves by 5e-5 x its scale when its input moves by 1e-7)."""
    config = fdm_published_config(**cfg)
    state = random_state(fdm_published_shapes(num_res_blocks=config["num_res_blocks"]), seed=3, scale=0.1)
    net = _published_fdm_net(config, state)
    path = write_fdm_published(tmp_path / "ema_0.9999_000010.pt", state=state, **cfg)
    ours = load_published(path, notify=print).model
    x, fi, t, obs = _inputs(seed=1, B=2, F=6 + padding, n_obs=2, level=0.37 * config["diffusion_steps"])
    real = slice(0, 6)  # the job; slots after it are padding (ours only: the published sampler never padded)
    valid = torch.ones_like(obs)
    valid[:, 6:] = False
    latent = valid & ~obs
    t_job = t.amax(dim=1)  # [B]: one timestep per job
    obs_mask = obs[:, real].float()[:, :, None, None, None]
    with torch.no_grad():
        # improved DDPM's wrapper: the net sees t * 1000 / diffusion_steps (rescale_timesteps)
        ref, _ = net(x[:, real], x0=x[:, real], timesteps=t_job * 1000 / config["diffusion_steps"],
                     frame_indices=fi[:, real], obs_mask=obs_mask, latent_mask=1 - obs_mask)
        out = ours(x, fi, torch.where(latent, t, torch.zeros_like(t)), obs, valid=valid if padding else None)
    diff = (out[:, real] - ref)[latent[:, real]].abs().max().item()
    scale = ref[latent[:, real]].abs().max().item()
    print(f"\nFDM {cfg or 'defaults'} padding {padding}: max|ours - published| = {diff:.3g}, "
          f"output scale {scale:.3g}, ratio {diff / scale:.3g}")
    assert scale > 1e-2  # the weights are not degenerate
    assert diff <= 1e-4 * scale
