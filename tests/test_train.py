"""Training: configs and presets, `fdm train` errors, the loop's outputs, NaN stops, periodic and
`fdm sample` sampling of trained checkpoints, EMA, learning rate, data stream, guidance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.datasets import make_dataset
from fdm_engine.errors import FdmError
from trainers import PRESETS, TRAINERS, TrainConfig, TrainingDiverged, resolve, train
from trainers.checkpoints import list_checkpoints
from trainers.config import load_config_file, merge

# The tiny presets, shrunk further (8 px, 6 frames) so a step takes ~0.1 s on one loaded core.
SMALL = dict(image_size=8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    """datasets/bouncing-balls: 3 train + 1 test videos of 24 frames at 8 px."""
    root = tmp_path_factory.mktemp("data")
    make_dataset("bouncing-balls", root / "datasets" / "bouncing-balls", num_videos=3, num_test=1,
                 length=24, size=8, seed=0)
    return root / "datasets" / "bouncing-balls"


def small_cfg(data, run_dir, model="fdm", **kw) -> TrainConfig:
    frames = {"max_frames": 6} if model == "fdm" else {}
    base = dict(dataset="bouncing-balls", data_dir=str(data), model=model, preset="tiny", run_dir=str(run_dir),
                steps=4, batch_size=2, save_every=2, log_every=1, sample_every=0, clip_length=12 if model == "fdm" else 6,
                model_config={**SMALL, **frames})
    return TrainConfig.from_dict({**base, **kw})


def run_cli(args, capsys) -> tuple[int, str, str]:
    return run_fdm(capsys, *args)


# ---------------------------------------------------------------------------------------------
# Configs and presets


@pytest.mark.parametrize("model", ["fdm", "vdm", "ramvid", "ssm"])
def test_every_model_has_a_tiny_preset_that_round_trips(model):
    cfg = resolve(TrainConfig(dataset="bouncing-balls", model=model, preset="tiny"))
    assert cfg.model == model and cfg.preset == "tiny"
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert resolve(cfg) == cfg, "resolving is idempotent"
    assert cfg.model_config["image_size"] == 32


@pytest.mark.parametrize("given", [{"ssm_version": "v8"}, {"ssm_version": 8}, {"ssm_mix": "8"}, {"ssm_mix": "glu"}])
def test_seed_s4d_version_names_select_the_glu_mix(given):
    """`--model-option ssm_version=v8` (the former field name) or the seed's `8` select mix "glu"
    and replace the preset's value rather than sit beside it."""
    cfg = resolve(TrainConfig(dataset="bouncing-balls", model="ssm", preset="tiny", model_config=given))
    assert cfg.model_config["ssm_mix"] == "glu" and "ssm_version" not in cfg.model_config
    assert resolve(TrainConfig(dataset="bouncing-balls", model="ssm", preset="tiny")).model_config["ssm_mix"] == "sum"


def test_seed_presets_hold_the_documented_settings():
    carla = resolve(TrainConfig(preset="fdm-carla"))
    assert (carla.model, carla.dataset, carla.clip_length, carla.batch_size) == ("fdm", "carla_no_traffic", 1000, 2)
    assert (carla.lr, carla.optimizer, carla.ema_decay, carla.diffusion_steps) == (1e-4, "adamw", 0.9999, 1000)
    assert carla.model_config["max_frames"] == 20 and carla.model_config["image_size"] == 128
    assert carla.model_config["base_channels"] == 128 and carla.model_config["num_res_blocks"] == 1
    ssm = resolve(TrainConfig(preset="ssm-ucf101-32"))
    assert (ssm.lr, ssm.diffusion_steps, ssm.batch_size, ssm.grad_accum) == (3e-4, 256, 32, 2)
    assert (ssm.optimizer, ssm.ema_decay, ssm.temporal_layer, ssm.steps) == ("adam", 0.995, "bi-s4d", 92_000)
    assert ssm.model_config["channel_mult"] == [1, 2, 4, 8] and ssm.clip_length == 16
    assert resolve(TrainConfig(preset="ssm-ucf101-64")).diffusion_steps == 1000
    assert resolve(TrainConfig(preset="ssm-minerl-32-150f")).clip_length == 150
    ucf = resolve(TrainConfig(preset="ramvid-ucf101-64"))
    assert (ucf.uncondition_rate, ucf.max_num_mask_frames, ucf.lr, ucf.batch_size, ucf.grad_accum) == (0.75, 4, 2e-5, 8, 4)
    assert resolve(TrainConfig(preset="ramvid-bair-64")).clip_length == 20
    vdm = resolve(TrainConfig(preset="vdm-mmnist-32"))
    assert (vdm.clip_length, vdm.model_config["channels"], vdm.batch_size, vdm.steps) == (16, 1, 8, 100_000)
    for model in TRAINERS.names():
        assert "tiny" in PRESETS[model]


def test_settings_priority_trainer_preset_file_command_line(tmp_path):
    assert resolve(TrainConfig(dataset="x", model="ramvid", preset="ramvid-bair-64")).lr == 2e-5  # trainer/preset
    assert resolve(TrainConfig(dataset="x", model="ramvid", preset="tiny")).lr == 2e-4  # preset beats trainer
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"lr": 3e-4, "steps": 7, "model_config": {"base_channels": 16}}))
    from_file = merge(load_config_file(f), TrainConfig(dataset="x", model="ramvid", lr=5e-4))
    cfg = resolve(from_file)
    assert (cfg.lr, cfg.steps, cfg.model_config["base_channels"]) == (5e-4, 7, 16)


def test_dataset_picks_the_models_preset_and_run_dir():
    cfg = resolve(TrainConfig(dataset="carla_no_traffic"))
    assert (cfg.model, cfg.preset, cfg.run_dir) == ("fdm", "fdm-carla", "runs/carla_no_traffic-fdm-carla")
    assert resolve(TrainConfig(dataset="bouncing-balls", model="ssm")).run_dir == "runs/bouncing-balls-ssm-tiny"
    assert resolve(TrainConfig(preset="vdm-mmnist-32")).model == "vdm"
    assert resolve(TrainConfig(dataset="d", model="ssm", temporal_layer="attn")).model_config["temporal_layer"] == "attn"


@pytest.mark.parametrize("cfg,match", [
    (dict(dataset="d", model="gan"), "unknown trainer 'gan'"),
    (dict(dataset="d", preset="huge"), "unknown preset 'huge'"),
    (dict(dataset="d", model="vdm", preset="fdm-carla"), "preset of --model fdm"),
    (dict(model="fdm"), "--dataset is required"),
    (dict(dataset="d", model="fdm", uncondition_rate=0.5), "applies to --model ramvid"),
    (dict(dataset="d", model="ssm", temporal_layer="lstm"), "--temporal-layer must be"),
    (dict(dataset="d", lr=-1.0), "--lr must be > 0"),
    (dict(dataset="d", batch_size=0), "--batch-size must be >= 1"),
    (dict(dataset="d", optimizer="sgd"), "--optimizer must be one of"),
    (dict(dataset="d", model_config={"base_chanels": 8}), "unknown field"),
])
def test_bad_settings_are_one_line_errors(cfg, match):
    with pytest.raises(FdmError, match=match) as e:
        resolve(TrainConfig.from_dict(cfg))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args,match", [
    (["--dataset", "bouncing-balls", "--model", "gan"], "unknown trainer 'gan'"),
    (["--dataset", "bouncing-balls", "--preset", "nope"], "unknown preset 'nope'"),
    (["--dataset", "minerl", "--steps", "1"], "no folder"),
    (["--dataset", "bouncing-balls", "--data-dir", "/no/such/dir", "--steps", "1"], "--data-dir /no/such/dir: no such folder"),
    (["--dataset", "no_such_set", "--steps", "1", "--data-dir", "."], "unknown dataset 'no_such_set'"),
    (["--config", "{bad}", "--dataset", "x"], "no such file"),
    (["--config", "BAD_JSON", "--dataset", "x"], "not valid JSON"),
    (["--config", "UNKNOWN_FIELD", "--dataset", "x"], "unknown field"),
], ids=["model", "preset", "dataset-folder", "data-dir", "dataset-name", "config-missing", "config-json",
        "config-field"])
def test_cli_errors_exit_2_with_one_line(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BAD_JSON").write_text("{lr: 1")
    (tmp_path / "UNKNOWN_FIELD").write_text('{"learning_rate": 1}')
    code, _, err = run_cli(["train", "--run-dir", str(tmp_path / "run"), *args], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err


def test_cli_print_config_and_list_presets(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["train", "--dataset", "minerl", "--model", "ssm", "--preset", "ssm-minerl-32-64f",
                            "--lr", "0.001", "--model-option", "base_channels=32", "--no-ema-warmup",
                            "--print-config"], capsys)
    cfg = json.loads(out)
    assert code == 0 and cfg["lr"] == 0.001 and cfg["model_config"]["base_channels"] == 32
    assert cfg["ema_warmup"] is False and cfg["clip_length"] == 64 and cfg["batch_size"] == 8
    code, out, _ = run_cli(["train", "--list-presets"], capsys)
    assert code == 0 and "fdm-carla" in out and "ssm-ucf101-32" in out and out.count("tiny") == 4


def test_bare_carla_command_finds_the_published_folder(tmp_path, capsys, monkeypatch):
    """`fdm train --dataset carla_no_traffic` resolves to the published FDM run on datasets/carla_no_traffic,
    and the same folder trains (tiny preset, for the CPU)."""
    make_dataset("bouncing-balls", tmp_path / "datasets" / "carla_no_traffic", num_videos=2, num_test=1,
                 length=14, size=16, format="carla")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["train", "--dataset", "carla_no_traffic", "--print-config"], capsys)
    cfg = json.loads(out)
    assert code == 0 and cfg["preset"] == "fdm-carla" and cfg["run_dir"] == "runs/carla_no_traffic-fdm-carla"
    code, out, err = run_cli(["train", "--dataset", "carla_no_traffic", "--preset", "tiny", "--steps", "1",
                              "--clip-length", "12", "--model-option", "image_size=8", "--model-option", "max_frames=4",
                              "--sample-every", "0", "--quiet"], capsys)
    assert code == 0, err
    assert "runs/carla_no_traffic-fdm-tiny/checkpoints/step_0000001.safetensors" in out


# ---------------------------------------------------------------------------------------------
# The loop's outputs


def test_run_folder_checkpoints_metrics_samples_and_fdm_sample(balls, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = small_cfg(balls, run_dir, sample_every=4, sample_steps=2, sample_length=12, sample_n_obs=3,
                    keep_checkpoints=1)
    result = train(cfg, progress=False)
    assert result.step == 4 and result.checkpoint == run_dir / "checkpoints" / "step_0000004.safetensors"
    assert [s for s, _ in list_checkpoints(run_dir)] == [4], "keep_checkpoints=1 prunes older ones"
    assert not list((run_dir / "checkpoints").glob(".*")), "no temp files left behind"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["steps_per_s"] > 0 and r["samples_per_s"] > 0 for r in records)
    assert (run_dir / "loss.png").stat().st_size > 1000
    assert (run_dir / "samples" / "step_0000004" / "video_0000.mp4").stat().st_size > 0
    assert TrainConfig.from_json((run_dir / "config.json").read_text()) == result.config

    loaded = load_checkpoint(result.checkpoint)
    assert loaded.used_ema and loaded.model_name == "fdm"
    assert loaded.extra["dataset"] == "bouncing-balls" and loaded.extra["step"] == 4
    assert loaded.extra["data_dir"] == str(balls.resolve())
    assert loaded.extra["train_config"]["preset"] == "tiny"

    # `fdm sample` on the checkpoint: conditioning from the recorded dataset's test split.
    monkeypatch.chdir(balls.parent.parent)  # datasets/bouncing-balls is where the name leads
    out = tmp_path / "samples"
    code, _, err = run_cli(["sample", str(result.checkpoint), "--scheme", "hierarchy-2", "--n-obs", "3",
                            "--length", "14", "--steps", "2", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert (out / "video_0000.mp4").is_file()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(balls, tmp_path, monkeypatch):
    from trainers import loop

    real, calls = loop.diffusion_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "diffusion_loss", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3.*step_0000002\.safetensors") as e:
        train(small_cfg(balls, run_dir, steps=6), progress=False)
    assert "\n" not in str(e.value)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    assert load_checkpoint(run_dir / "checkpoints" / "step_0000002.safetensors").extra["step"] == 2


def test_grad_accumulation_reads_one_micro_batch_per_pass(balls, tmp_path):
    """batch 2 over grad_accum 2: each step consumes two micro-batches of one clip (3 clips per
    epoch, so 2 steps end one clip into epoch 1)."""
    run_dir = tmp_path / "acc"
    result = train(small_cfg(balls, run_dir, steps=2, grad_accum=2, grad_clip=0.0), progress=False)
    companion = torch.load(result.checkpoint.with_name("step_0000002.state.pt"), weights_only=True)
    assert companion["data"] == {"epoch": 1, "batch": 1}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["samples_per_s"] == pytest.approx(2 * r["steps_per_s"]) for r in records)


def test_resuming_with_other_settings_is_refused(balls, tmp_path):
    run_dir = tmp_path / "run"
    train(small_cfg(balls, run_dir, steps=2), progress=False)
    with pytest.raises(FdmError, match="other settings.*lr"):
        train(small_cfg(balls, run_dir, steps=3, lr=0.5), progress=False)
    result = train(small_cfg(balls, run_dir, steps=3), progress=False)  # more steps: allowed
    assert result.step == 3
    result = train(TrainConfig(run_dir=str(run_dir), steps=4), progress=False)  # the folder alone
    assert result.step == 4 and result.config.model_config["image_size"] == 8


# ---------------------------------------------------------------------------------------------
# Pieces


def test_ema_decay_and_warmup():
    from trainers.ema import EMA

    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.1 * before + 0.9 * model.weight)
    ema.updates = 1000
    assert ema.current_decay() == 0.9
    assert EMA(model, 0.9, warmup=False).current_decay() == 0.9


def test_learning_rate_warmup():
    from trainers.optim import lr_at

    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 1e-4, 0) == 1e-4


def test_learning_rate_decays_linearly_to_zero_over_the_last_steps():
    from trainers.optim import lr_at

    # 10 steps, warm-up 2, decay over the last 4: steps 6..9 take 4/4, 3/4, 2/4, 1/4 of lr.
    assert [lr_at(s, 1.0, 2, 10, 4) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    # Only the steps left matter: the same run annealed from step 6 whatever its constant part.
    assert [lr_at(s, 1.0, 0, 20, 4) for s in range(16, 20)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_at(5, 1.0, 0, 10, 0) == 1.0


def test_data_stream_resumes_exactly_and_shards_ranks(balls):
    from fdm_engine.datasets import open_dataset
    from trainers.data import DataStream
    from trainers.distributed import DistEnv

    clips = open_dataset("bouncing-balls", balls).windows(5, seed=3)
    a = DataStream(clips, 2, DistEnv(), seed=3)
    first = [a.next() for _ in range(4)]
    state = a.state()
    rest = [a.next() for _ in range(5)]
    b = DataStream(clips, 2, DistEnv(), seed=3)
    b.load_state(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [b.next() for _ in range(5)]))
    assert state["epoch"] >= 1, "several epochs of a 3-video dataset were crossed"
    assert all(x.shape == (2, 5, 3, 8, 8) for x in first)
    r0, r1 = (DataStream(clips, 1, DistEnv(rank=r, world=2), seed=3) for r in (0, 1))
    assert not set(sum(r0.batches(0), [])) & set(sum(r1.batches(0), [])), "ranks see different clips"


def test_reconstruction_guidance_moves_towards_the_exact_conditional():
    """On Gaussian-process videos, with a differentiable exact *unconditional* denoiser, guidance
    (w_r = 2) brings x0 of the latent frames closer to the exact conditional mean than the
    replacement method (w_r = 0); with no observed frame it is the model itself."""
    from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule, prediction
    from fdm_engine.diffusion.schedule import expand_like
    from fdm_engine.guidance import ReconstructionGuidance
    from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig

    sch = NoiseSchedule(DiffusionConfig())
    oracle = GaussianProcessOracle(OracleConfig(kernel="se", lengthscale=3.0, size=8, channels=1), sch)

    class Unconditional(torch.nn.Module):
        def forward(self, x, idx, levels, observed, valid=None):
            assert not observed.any()
            sigma = oracle.covariance(idx)  # [B, F, F]
            a, s = sch.alpha_sigma(levels.double())
            m = a[:, :, None] * sigma * a[:, None, :] + torch.diag_embed(s**2)
            x0 = (sigma @ (a[:, :, None] * torch.linalg.solve(m, x.double().flatten(2)))).reshape(x.shape)
            return (x - expand_like(a, x) * x0.float()) / expand_like(s, x)

    g = torch.Generator().manual_seed(0)
    B, F = 16, 6
    video = oracle.sample_prior(B, F, generator=g)  # [B, F, 1, 8, 8]
    idx = torch.arange(F).expand(B, F)
    obs = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool).expand(B, F)
    for t in (100.0, 300.0, 600.0):
        levels = torch.where(obs, 0.0, t)
        a, s = (expand_like(c, video) for c in sch.alpha_sigma(levels.double()))
        x = torch.where(expand_like(obs, video).bool(), video, a * video + s * torch.randn(video.shape, generator=g))
        exact = prediction.to_x0(oracle(x, idx, levels, obs), "eps", x, a, s)[:, 3:]
        err = {w: (prediction.to_x0(ReconstructionGuidance(Unconditional(), sch, w)(x, idx, levels, obs), "eps",
                                    x, a, s)[:, 3:] - exact).pow(2).mean().item() for w in (0.0, 2.0)}
        assert err[2.0] < (0.8 if t <= 300 else 1.0) * err[0.0], (t, err)  # the gain shrinks with noise
    plain = Unconditional()(x, idx, torch.full((B, F), 500.0), torch.zeros_like(obs))
    wrapped = ReconstructionGuidance(Unconditional(), sch, 2.0)(x, idx, torch.full((B, F), 500.0), torch.zeros_like(obs))
    assert torch.equal(plain, wrapped)


def test_fdm_trainer_rejects_clips_shorter_than_k(balls, tmp_path):
    with pytest.raises(FdmError, match="--clip-length 4 is shorter than the model's 6 frames"):
        train(small_cfg(balls, tmp_path / "r", clip_length=4), progress=False)


def test_batch_size_must_split_over_accumulation(balls, tmp_path):
    with pytest.raises(FdmError, match="multiple of ranks x --grad-accum"):
        train(small_cfg(balls, tmp_path / "r", batch_size=3, grad_accum=2), progress=False)


def test_masks_reach_the_loss_only_on_latent_frames():
    """The trainer's batches feed diffusion_loss, which averages over latent (not observed, not
    padding) frames: a model that is exact on latent frames and wrong elsewhere has zero loss."""
    from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule, diffusion_loss
    from trainers.fdm import FDMTrainer

    class Stub:
        max_frames = 6

    trainer = FDMTrainer(type("C", (), {"clip_length": 20})(), Stub())
    clips = torch.randn(2, 20, 1, 2, 2)
    batch = trainer.make_batch(clips, np.random.default_rng(0))
    noise = torch.randn(batch.x0.shape)
    latent = (~batch.observed & batch.valid)[..., None, None, None]

    def model(x, idx, levels, observed, valid=None):
        return torch.where(latent, noise, torch.full_like(noise, 7.0))

    sch = NoiseSchedule(DiffusionConfig())
    loss = diffusion_loss(model, sch, batch.x0, batch.frame_indices, batch.observed, batch.valid, noise=noise)
    assert loss.item() == 0.0


@pytest.mark.parametrize("model", ["vdm", "ramvid", "ssm"])
def test_periodic_sampling_of_every_model(model, balls, tmp_path):
    """Each trainer's model samples during training with its default scheme and given frames
    (vdm and ssm through reconstruction guidance, recorded in the checkpoint for samplers)."""
    from fdm_engine.guidance import ReconstructionGuidance, for_checkpoint

    run_dir = tmp_path / model
    result = train(small_cfg(balls, run_dir, model=model, steps=1, sample_every=1, sample_steps=2,
                             sample_length=9, sample_n_obs=3), progress=False)
    assert (run_dir / "samples" / "step_0000001" / "video_0000.mp4").stat().st_size > 0
    wrapped = for_checkpoint(load_checkpoint(result.checkpoint))
    assert isinstance(wrapped, ReconstructionGuidance) == (model != "ramvid")
