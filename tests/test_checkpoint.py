"""Checkpoints: bit-exact round trips and conversion in both formats, and a clear FdmError (never
code execution, never a broken file) for every kind of bad file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cli.main import main as cli_main
from fdm_engine import checkpoint as ckpt
from fdm_engine.checkpoint import convert_checkpoint, load_checkpoint, save_checkpoint
from fdm_engine.config import Config
from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS

REPO = Path(__file__).resolve().parents[1]
FORMATS = [".safetensors", ".pt"]


@dataclasses.dataclass(frozen=True)
class TinyConfig(Config):
    channels: int = 3
    width: int = 8
    kernel: tuple[int, int] = (3, 3)


class TinyModel(nn.Module):
    """A conv over each frame plus a noise-level embedding; it has a tied weight and a
    non-contiguous buffer, which safetensors cannot store as they are."""

    Config = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.image_size, self.channels, self.max_frames = 8, config.channels, None
        self.conv_in = nn.Conv2d(config.channels, config.width, config.kernel, padding=1)
        self.emb = nn.Linear(config.width, config.width)
        self.emb_out = nn.Linear(config.width, config.width)
        self.emb_out.weight = self.emb.weight  # tied: two state_dict keys, one tensor
        self.conv_out = nn.Conv2d(config.width, config.channels, 1)
        self.register_buffer("freqs", torch.linspace(0.1, 1.0, 2 * config.width).view(2, -1).t())  # [W, 2]

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        b, f, c, h, w = x.shape  # [B, F, C, H, W]
        emb = self.emb_out(torch.sin(self.emb(self.freqs[:, 0] * noise_levels[..., None])))  # [B, F, W]
        hidden = self.conv_in(x.reshape(b * f, c, h, w)) + emb.reshape(b * f, -1, 1, 1)
        return self.conv_out(hidden).reshape(b, f, c, h, w)


MODELS.register("test_tiny", TinyModel)


def make_model(seed=0, **config) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(TinyConfig(**config))


def run_model(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, model.config.channels, 8, 8, generator=g)  # [B, F, C, H, W]
    t = torch.rand(2, 3, generator=g) * 999  # [B, F]
    with torch.no_grad():
        return model(x, torch.arange(3).expand(2, 3), t, torch.zeros(2, 3, dtype=torch.bool))


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def raw_tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt._read(Path(path)).tensors


DIFFUSION = DiffusionConfig(schedule="cosine", num_steps=500, prediction="v")
EXTRA = {"step": 1234, "dataset": "carla", "lr": 1e-4}


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def ema_state():
    return make_model(seed=7).state_dict()


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_without_ema(tmp_path, model, suffix):
    path = save_checkpoint(tmp_path / f"ckpt{suffix}", model, DIFFUSION, extra=EXTRA)
    loaded = load_checkpoint(path)
    assert not loaded.used_ema and not loaded.model.training
    assert loaded.model_name == "test_tiny" and loaded.path == path
    assert loaded.model.config == model.config and loaded.diffusion == DIFFUSION
    assert loaded.extra == EXTRA
    assert_same_tensors(loaded.model.state_dict(), model.state_dict())
    assert torch.equal(run_model(loaded.model), run_model(model))


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_with_ema(tmp_path, model, ema_state, suffix):
    path = save_checkpoint(tmp_path / f"ckpt{suffix}", model, DIFFUSION, ema_state=ema_state)
    with_ema = load_checkpoint(path)
    assert with_ema.used_ema
    assert_same_tensors(with_ema.model.state_dict(), ema_state)
    raw = load_checkpoint(path, use_ema=False)
    assert not raw.used_ema
    assert_same_tensors(raw.model.state_dict(), model.state_dict())
    assert torch.equal(run_model(raw.model), run_model(model))
    # The tie survives: both keys load into the one shared parameter.
    assert raw.model.emb_out.weight is raw.model.emb.weight


@pytest.mark.parametrize("suffix", FORMATS)
def test_saves_view_and_tied_tensors_compactly(tmp_path, model, suffix):
    path = save_checkpoint(tmp_path / f"ckpt{suffix}", model, DIFFUSION)
    tensors = raw_tensors(path)
    assert tensors["model.freqs"].is_contiguous()
    assert tensors["model.emb.weight"].data_ptr() != tensors["model.emb_out.weight"].data_ptr()


def test_convert_pt_safetensors_pt_bit_exact(tmp_path, model, ema_state):
    src = save_checkpoint(tmp_path / "a.pt", model, DIFFUSION, ema_state=ema_state, extra=EXTRA)
    info = convert_checkpoint(src, tmp_path / "b.safetensors")
    assert info.model_name == "test_tiny" and info.has_ema and info.diffusion == DIFFUSION
    back = convert_checkpoint(tmp_path / "b.safetensors", tmp_path / "c.pt")
    for path in (tmp_path / "b.safetensors", back.path):
        assert_same_tensors(raw_tensors(path), raw_tensors(src))
        assert ckpt._read(path).meta == ckpt._read(src).meta
    loaded = load_checkpoint(back.path)
    assert loaded.extra == EXTRA and loaded.model.config == model.config


def test_safetensors_metadata_layout(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model, DIFFUSION, extra=EXTRA)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert set(meta) == {"fdm_format", "model", "model_config", "diffusion", "extra"}
    assert meta["fdm_format"] == "1" and meta["model"] == "test_tiny"
    assert TinyConfig.from_json(meta["model_config"]) == model.config
    assert DiffusionConfig.from_json(meta["diffusion"]) == DIFFUSION


# --- bad files ----------------------------------------------------------------------------------


def write_safetensors(path, tensors, meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def test_random_bytes(tmp_path):
    for suffix in FORMATS:
        path = tmp_path / f"rand{suffix}"
        path.write_bytes(os.urandom(4096))
        with pytest.raises(FdmError, match=f"{path.name}: not a valid"):
            load_checkpoint(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated(tmp_path, model, suffix):
    path = save_checkpoint(tmp_path / f"ckpt{suffix}", model, DIFFUSION)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FdmError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_missing_file_and_bad_suffix(tmp_path, model):
    with pytest.raises(FdmError, match="nope.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FdmError, match="unknown checkpoint format '.bin'"):
        save_checkpoint(tmp_path / "x.bin", model, DIFFUSION)
    assert not list(tmp_path.iterdir())


def test_wrong_shapes_names_keys(tmp_path):
    # Weights of a width-4 model under metadata that claims the width-8 default: same keys.
    path = save_checkpoint(tmp_path / "w.safetensors", make_model(width=4), DIFFUSION)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta["model_config"] = TinyConfig().to_json()
    write_safetensors(path, raw_tensors(path), meta)
    with pytest.raises(FdmError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and "w.safetensors" in msg
    assert "wrong shape " in msg and "conv_in.weight (expected [8, 3, 3, 3], found [4, 3, 3, 3])" in msg
    assert msg.endswith("(+5 more)")  # 8 wrong keys, the first 3 named


def test_missing_and_unexpected_keys(tmp_path, model):
    path = save_checkpoint(tmp_path / "k.pt", model, DIFFUSION)
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["stray.weight"] = obj["state_dict"].pop("conv_out.bias")
    torch.save(obj, path)
    with pytest.raises(FdmError, match=r"k\.pt: weights do not match .*missing conv_out\.bias; "
                                       r"unexpected stray\.weight"):
        load_checkpoint(path)


def test_bad_ema_keys(tmp_path, model, ema_state):
    path = save_checkpoint(tmp_path / "e.safetensors", model, DIFFUSION, ema_state=ema_state)
    tensors = raw_tensors(path)
    del tensors["ema.emb.bias"]
    with safe_open(str(path), framework="pt") as f:
        write_safetensors(path, tensors, f.metadata())
    with pytest.raises(FdmError, match="EMA weights do not match .*missing emb.bias"):
        load_checkpoint(path)
    with pytest.raises(FdmError, match="ema_state does not match"):
        save_checkpoint(tmp_path / "f.pt", model, DIFFUSION, ema_state={"x": torch.zeros(1)})


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop("fdm_format"), "not an fdm checkpoint"),
    (lambda m: m.update(fdm_format="2"), "unsupported fdm_format 2"),
    (lambda m: m.update(model_config="{not json"), "malformed metadata"),
    (lambda m: m.update(model="no_such_model"), "unknown model 'no_such_model'"),
    (lambda m: m.update(model_config='{"depth": 3}'), "unknown field"),
], ids=["no-format", "future-format", "bad-json", "unknown-model", "unknown-field"])
def test_bad_metadata(tmp_path, model, change, match):
    path = save_checkpoint(tmp_path / "m.safetensors", model, DIFFUSION)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    change(meta)
    write_safetensors(path, raw_tensors(path), meta)
    with pytest.raises(FdmError, match=match) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_checkpoint_with_the_former_ssm_version_field_loads(tmp_path):
    """Checkpoints written before `ssm_version` ("v16" | "v8") became `ssm_mix` ("sum" | "glu")
    rebuild the same model and load its weights."""
    import json

    from fdm_engine.models.vdm_unet import SSMUNet, SSMUNetConfig

    torch.manual_seed(0)
    model = SSMUNet(SSMUNetConfig(image_size=8, channels=1, base_channels=16, channel_mult=(1,), num_res_blocks=1,
                                  attention_resolutions=(8,), num_heads=2, num_frames=4, ssm_state_size=4,
                                  ssm_mlp_hidden=8, ssm_mix="glu")).eval()
    path = save_checkpoint(tmp_path / "old.safetensors", model, DIFFUSION)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    old = json.loads(meta["model_config"])
    old["ssm_version"] = "v8"
    del old["ssm_mix"]
    write_safetensors(path, raw_tensors(path), {**meta, "model_config": json.dumps(old)})
    loaded = load_checkpoint(path).model
    assert loaded.config == model.config and loaded.config.ssm_mix == "glu"
    x = torch.randn(1, 4, 1, 8, 8)
    args = (torch.arange(4)[None], torch.full((1, 4), 0.5), torch.zeros(1, 4, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(loaded(x, *args), model(x, *args))


class _Payload:
    """Unpickling this creates `marker`: what a hostile checkpoint would do, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_hostile_pt(path, marker, model):
    obj = {"fdm_format": 1, "model": "test_tiny", "model_config": model.config.to_dict(),
           "diffusion": DIFFUSION.to_dict(), "extra": {}, "state_dict": dict(model.state_dict())}
    obj["state_dict"]["conv_in.weight"] = _Payload(marker)
    torch.save(obj, path)


def test_pickle_that_runs_code_is_refused(tmp_path, model):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    write_hostile_pt(path, marker, model)
    # The file really is hostile: an unsafe load runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(FdmError, match=r"evil\.pt: refuses to load: the pickle needs \S*open"):
        load_checkpoint(path)
    with pytest.raises(FdmError, match="refuses to load"):
        convert_checkpoint(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_convert(tmp_path, model, ema_state, capsys):
    src = save_checkpoint(tmp_path / "a.pt", model, DIFFUSION, ema_state=ema_state)
    dst = tmp_path / "a.safetensors"
    cli_main(["convert", str(src), str(dst)])
    out = capsys.readouterr().out
    assert f"wrote {dst}" in out and "'test_tiny'" in out and "+ EMA" in out
    assert_same_tensors(raw_tensors(dst), raw_tensors(src))


def test_cli_help():
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, ["convert", "--help"])
    assert result.exit_code == 0 and "weights_only" in result.output and "fdm convert" in result.output


def test_cli_error_is_one_line_exit_2(tmp_path, model):
    bad, marker = tmp_path / "bad.pt", tmp_path / "pwned"
    write_hostile_pt(bad, marker, model)
    argv = [sys.executable, "-m", "cli.main", "convert", str(bad), str(tmp_path / "o.safetensors")]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}: refuses to load")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


# --- interrupted saves --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, model, suffix):
    path = save_checkpoint(tmp_path / f"ckpt{suffix}", model, DIFFUSION, extra={"step": 1})
    real_write = ckpt._WRITERS[suffix]

    def write_then_die(raw, tmp):
        real_write(raw, tmp)
        assert tmp.exists() and tmp.parent == path.parent
        raise KeyboardInterrupt  # as if the job were stopped before the rename

    monkeypatch.setitem(ckpt._WRITERS, suffix, write_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_model(seed=3), DIFFUSION, extra={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    loaded = load_checkpoint(path)
    assert loaded.extra == {"step": 1}
    assert_same_tensors(loaded.model.state_dict(), model.state_dict())
