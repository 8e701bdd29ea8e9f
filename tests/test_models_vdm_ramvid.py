"""VDM, SSM and RaMViD denoisers: contract shapes, padding isolation, how frame indices enter
(relative for VDM, order only for SSM, contiguous slots for RaMViD), refusals, config round trips,
presets, gradients."""

from __future__ import annotations

import pytest
import torch

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS, build_model, model_name, model_preset
from fdm_engine.models.ramvid_unet import RaMViDUNetConfig
from fdm_engine.models.temporal_layers import (
    TEMPORAL_LAYERS,
    frame_order,
    relative_buckets,
)
from fdm_engine.models.vdm_unet import SSMUNet, SSMUNetConfig, VDMUNet, VDMUNetConfig


# 16 px, two levels: spatial + temporal layers at 16, 8 and in the middle; GroupNorm(16).
SMALL = {
    "vdm": VDMUNetConfig(
        image_size=16, channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=2, num_frames=8, rel_buckets=8, rel_max_distance=32,
    ),
    "ssm": SSMUNetConfig(
        image_size=16, channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=2, num_frames=8, ssm_state_size=16, ssm_mlp_hidden=16,
    ),
    "ramvid": RaMViDUNetConfig(
        image_size=16, channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=2, num_frames=8,
    ),
}
NAMES = list(SMALL)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(name: str, config: Config | None = None, seed: int = 0) -> torch.nn.Module:
    """A small model with every parameter perturbed, so zero-initialised layers are live."""
    torch.manual_seed(seed)
    model = MODELS.get(name)(config or SMALL[name]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def make_inputs(B: int, Fr: int, seed: int = 1, contiguous: bool = False):
    """x [B, F, 3, 16, 16], frame indices (consecutive from a random start if `contiguous`, else
    distinct random ones), noise levels (0 on observed), observed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Fr, 3, 16, 16, generator=g)
    if contiguous:
        idx = torch.randint(0, 100, (B, 1), generator=g) + torch.arange(Fr)
    else:
        idx = torch.stack([torch.randperm(60, generator=g)[:Fr] for _ in range(B)])
    observed = torch.rand(B, Fr, generator=g) < 0.4
    levels = torch.where(observed, 0.0, torch.rand(B, Fr, generator=g) * 999)
    return x, idx.long(), levels, observed


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---- contract --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("B,Fr", [(1, 1), (2, 5), (1, 8)], ids=lambda v: str(v))
def test_output_shape(name, B, Fr):
    model = make_model(name)
    with torch.no_grad():
        out = model(*make_inputs(B, Fr, contiguous=True))
    assert out.shape == (B, Fr, 3, 16, 16)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_attributes_and_registry_names(name):
    model = make_model(name)
    assert model.config == SMALL[name]
    assert (model.image_size, model.channels, model.max_frames) == (16, 3, None)
    assert model_name(model) == name  # vdm and ssm are distinct classes, so checkpoints keep the name


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_shapes_refused(name):
    model = make_model(name)
    x, idx, levels, observed = make_inputs(1, 4, contiguous=True)
    with pytest.raises(FdmError, match="frames of shape"):
        model(x[:, :, :2], idx, levels, observed)
    with pytest.raises(FdmError, match="noise_levels"):
        model(x, idx, levels[:, :3], observed)


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_grads(name):
    model = make_model(name).train()
    x, idx, levels, observed = make_inputs(2, 4, contiguous=True)
    valid = torch.tensor([[True] * 4, [True, True, True, False]])
    model(x, idx, levels, observed, valid).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(p.grad.abs().sum().item() for p in model.parameters()) > 0


# ---- padding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_padding_isolation(name):
    """Real frames' outputs equal the model run on the real frames alone, whatever the padding holds."""
    model = make_model(name)
    x, idx, levels, observed = make_inputs(2, 6, contiguous=True)
    valid = torch.tensor([[True, True, True, True, False, False], [True, True, True, True, True, True]])
    x2, idx2, levels2 = x.clone(), idx.clone(), levels.clone()
    x2[0, 4:] = 5 * torch.randn(2, 3, 16, 16)
    idx2[0, 4:] = torch.tensor([2, 90])  # padding may carry any indices, even duplicates of real ones
    levels2[0, 4:] = torch.tensor([3.0, 700.0])
    with torch.no_grad():
        out = model(x, idx, levels, observed, valid)
        out2 = model(x2, idx2, levels2, observed, valid)
        alone = model(x[:1, :4], idx[:1, :4], levels[:1, :4], observed[:1, :4])
        full = model(x[1:], idx[1:], levels[1:], observed[1:])
    assert max_err(out[0, :4], out2[0, :4]) < 1e-5
    assert max_err(out[0, :4], alone[0]) < 1e-4
    assert max_err(out[1], full[0]) < 1e-4
    assert max_err(out[1], out2[1]) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_slot_order_does_not_matter(name):
    """Permuting the slots permutes the outputs (VDM: attention; SSM/RaMViD sort by frame index)."""
    model = make_model(name)
    x, idx, levels, observed = make_inputs(2, 5, contiguous=True)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out = model(x, idx, levels, observed)
        out_p = model(x[:, perm], idx[:, perm], levels[:, perm], observed[:, perm])
    assert max_err(out[:, perm], out_p) < 1e-4


def test_frame_order_puts_real_frames_first_by_index():
    idx = torch.tensor([[7, 3, 9, 1, 5]])
    valid = torch.tensor([[True, True, False, True, False]])
    assert frame_order(idx, valid).tolist() == [[3, 1, 0, 4, 2]]  # real 1, 3, 7 then padding 5, 9
    assert frame_order(idx, None).tolist() == [[3, 1, 4, 0, 2]]


# ---- frame indices -------------------------------------------------------------------------


def test_vdm_relative_bias_shift_invariant_and_distance_sensitive():
    model = make_model("vdm")
    x, idx, levels, observed = make_inputs(2, 5)
    with torch.no_grad():
        out = model(x, idx, levels, observed)
        shifted = model(x, idx + 37, levels, observed)
        stretched = model(x, idx * 3, levels, observed)  # changes the distances, not just their origin
    assert max_err(out, shifted) < 1e-5
    assert max_err(out, stretched) > 1e-3


def test_relative_buckets():
    d = torch.arange(-300, 301)
    b = relative_buckets(d, num_buckets=32, max_distance=128)
    assert b.min() >= 0 and b.max() <= 31
    assert (b[d <= 0] < 16).all() and (b[d > 0] >= 16).all()  # one half per sign
    assert b[300 - torch.arange(8)].tolist() == list(range(8))  # exact near 0 ...
    assert b[300 + torch.arange(1, 8)].tolist() == list(range(17, 24))  # ... on both sides
    pos = b[300:]
    assert (pos[1:] >= pos[:-1]).all()  # monotone in distance
    assert (b[300 + 128:] == b[300 + 300]).all()  # clipped beyond max_distance


def test_ssm_sees_order_not_gaps():
    model = make_model("ssm")
    x, _, levels, observed = make_inputs(1, 4)
    with torch.no_grad():
        a = model(x, torch.tensor([[0, 1, 2, 3]]), levels, observed)
        b = model(x, torch.tensor([[10, 12, 17, 40]]), levels, observed)  # same order, gaps ignored
        c = model(x, torch.tensor([[3, 2, 1, 0]]), levels, observed)  # reversed order
    assert max_err(a, b) < 1e-5
    assert max_err(a, c) > 1e-3


def test_ramvid_refuses_gaps():
    model = make_model("ramvid")
    x, _, levels, observed = make_inputs(1, 4)
    with pytest.raises(FdmError, match="consecutive frame indices"):
        model(x, torch.tensor([[0, 1, 3, 4]]), levels, observed)


def test_ramvid_one_timestep_per_clip():
    """The clip's time is the largest level over its frames; the other levels do not matter."""
    model = make_model("ramvid")
    x, idx, _, observed = make_inputs(1, 4, contiguous=True)
    with torch.no_grad():
        a = model(x, idx, torch.tensor([[0.0, 500.0, 500.0, 500.0]]), observed)
        b = model(x, idx, torch.tensor([[0.0, 100.0, 500.0, 20.0]]), observed)
    assert max_err(a, b) == 0.0


def test_ramvid_scale_time_dim():
    model = make_model("ramvid", SMALL["ramvid"].replace(scale_time_dim=True))  # 2 levels: F % 2 == 0
    x, idx, levels, observed = make_inputs(1, 4, contiguous=True)
    with torch.no_grad():
        assert model(x, idx, levels, observed).shape == x.shape
    with pytest.raises(FdmError, match="divisible by 2"):
        model(x[:, :3], idx[:, :3], levels[:, :3], observed[:, :3])
    with pytest.raises(FdmError, match="divisible by 2"):  # 3 real frames after removing padding
        model(x, idx, levels, observed, torch.tensor([[True, True, True, False]]))


# ---- configs and presets ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_config_json_round_trip(name):
    cfg = SMALL[name]
    assert type(cfg).from_json(cfg.to_json()) == cfg
    if name in NAMES:
        assert build_model(name, cfg.to_dict()).config == cfg
    with pytest.raises(FdmError, match="unknown field"):
        type(cfg).from_dict({"image_size": 16, "bogus": 1})


def test_ssm_is_vdm_with_bi_s4d():
    assert SSMUNetConfig().temporal_layer == "bi-s4d" and VDMUNetConfig().temporal_layer == "attn"
    assert issubclass(SSMUNet, VDMUNet)
    assert {"attn", "bi-s4d"} <= set(TEMPORAL_LAYERS.names())


@pytest.mark.parametrize(
    "cls,changes,match",
    [
        (VDMUNetConfig, {"temporal_layer": "lstm"}, "temporal_layer"),
        (VDMUNetConfig, {"num_heads": 3}, "num_heads"),
        (VDMUNetConfig, {"rel_buckets": 2}, "rel_buckets"),
        (VDMUNetConfig, {"image_size": 20, "channel_mult": (1, 2, 2, 2)}, "divisible"),
        (RaMViDUNetConfig, {"image_size": 48}, "channel_mult"),
        (RaMViDUNetConfig, {"scale_time_dim": 1}, "scale_time_dim"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_bad_configs_refused(cls, changes, match):
    with pytest.raises(FdmError, match=match):
        cls(**changes)


PRESET_NAMES = {
    "vdm": ["tiny", "vdm-mmnist-32"],
    "ssm": ["tiny", "ssm-ucf101-32", "ssm-ucf101-64", "ssm-minerl-32-64f", "ssm-minerl-32-150f"],
    "ramvid": ["tiny", "ramvid-bair-64", "ramvid-kinetics600-64", "ramvid-ucf101-64"],
}


@pytest.mark.parametrize("name,preset", [(n, p) for n, ps in PRESET_NAMES.items() for p in ps])
def test_presets_exist_and_build(name, preset):
    cfg = model_preset(name, preset)
    assert isinstance(cfg, MODELS.get(name).Config)
    assert type(cfg).from_json(cfg.to_json()) == cfg
    with torch.device("meta"):  # builds the modules without allocating the big presets' weights
        model = build_model(name, cfg.to_dict())
    assert model.config == cfg


def test_seed_settings_in_presets():
    mm = model_preset("vdm", "vdm-mmnist-32")
    assert (mm.image_size, mm.channels, mm.num_frames, mm.base_channels, mm.mults) == (32, 1, 16, 128, (1, 2, 2, 2))
    ucf = model_preset("ssm", "ssm-ucf101-32")
    assert (ucf.base_channels, ucf.mults, ucf.num_heads, ucf.time_embed_dim) == (64, (1, 2, 4, 8), 8, 1024)
    assert (ucf.ssm_state_size, ucf.ssm_mlp_hidden, ucf.temporal_layer) == (512, 512, "bi-s4d")
    assert model_preset("ramvid", "ramvid-bair-64").num_frames == 20
    assert model_preset("ramvid", "ramvid-ucf101-64").num_res_blocks == 3
    assert model_preset("fdm", "tiny").image_size == 32  # the shared lookup also finds FDM's presets


def test_unknown_preset_and_model():
    with pytest.raises(FdmError, match="unknown vdm preset 'huge'.*tiny"):
        model_preset("vdm", "huge")
    with pytest.raises(FdmError, match="unknown model"):
        model_preset("nope", "tiny")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_forward(name):
    """The tiny presets (32 px) run one batch-1 x 10-frame forward."""
    torch.manual_seed(0)
    model = build_model(name, model_preset(name, "tiny").to_dict()).eval()
    x = torch.randn(1, 10, 3, 32, 32)
    observed = torch.arange(10)[None] < 2
    with torch.no_grad():
        out = model(x, torch.arange(10)[None], torch.where(observed, 0.0, 500.0), observed)
    assert out.shape == x.shape and torch.isfinite(out).all()
