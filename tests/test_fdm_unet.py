"""FDM denoiser: contract shapes, order only through relative indices, padding isolation,
the temporal attention against a naive loop, config round trips."""

from __future__ import annotations

import math

import pytest
import torch

from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS, build_model, model_name
from fdm_engine.models.attention import temporal_attention, temporal_attention_ref
from fdm_engine.models.fdm_unet import PRESETS, FDMUNet, FDMUNetConfig, fdm_preset

# 16 px, attention at 16 (level 0), 8 (level 1) and the middle; 16 channels -> GroupNorm(16).
SMALL = FDMUNetConfig(
    image_size=16, channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
    attention_resolutions=(16, 8), num_heads=2, max_frames=8,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(dtype=torch.float32, perturb: bool = True, seed: int = 0) -> FDMUNet:
    """The SMALL model; `perturb` adds noise to every parameter so zero-initialised layers are live."""
    torch.manual_seed(seed)
    model = FDMUNet(SMALL).to(dtype).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_inputs(B: int, Fr: int, dtype=torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Fr, 3, 16, 16, generator=g, dtype=dtype)
    idx = torch.randperm(50, generator=g)[: B * Fr].view(B, Fr).long()
    observed = torch.rand(B, Fr, generator=g) < 0.4
    levels = torch.where(observed, 0.0, torch.rand(B, Fr, generator=g) * 999).to(dtype)
    return x, idx, levels, observed


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float) -> None:
    err = (ref - out).abs().max().item()
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol:.3g}"


# ---- contract --------------------------------------------------------------------------------


@pytest.mark.parametrize("B,Fr", [(1, 1), (1, 3), (2, 5), (1, 8)], ids=lambda v: str(v))
def test_output_shape_and_dtype(B, Fr):
    model = make_model()
    x, idx, levels, observed = make_inputs(B, Fr)
    with torch.no_grad():
        out = model(x, idx, levels, observed)
    assert out.shape == (B, Fr, 3, 16, 16)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_float64_and_fractional_timesteps():
    model = make_model(torch.float64)
    x, idx, levels, observed = make_inputs(1, 4, torch.float64)
    observed[:] = False
    with torch.no_grad():
        a = model(x, idx, torch.full_like(levels, 10.0), observed)
        b = model(x, idx, torch.full_like(levels, 10.5), observed)
    assert a.dtype == torch.float64
    assert (a - b).abs().max() > 1e-6, "fractional timesteps must change the embedding"


def test_attributes_and_registry():
    model = FDMUNet(SMALL)
    assert (model.image_size, model.channels, model.max_frames) == (16, 3, 8)
    assert model.config is SMALL
    assert MODELS.get("fdm") is FDMUNet and FDMUNet.Config is FDMUNetConfig
    assert model_name(model) == "fdm"


def test_zero_init_output_and_wrong_shapes():
    model = FDMUNet(SMALL).eval()
    x, idx, levels, observed = make_inputs(1, 3)
    with torch.no_grad():
        assert (model(x, idx, levels, observed) == 0).all(), "output conv is zero-initialised"
    with pytest.raises(FdmError, match="frames of shape"):
        model(torch.zeros(1, 3, 3, 32, 32), idx, levels, observed)
    with pytest.raises(FdmError, match="noise_levels"):
        model(x, idx, levels[:, :2], observed)


# ---- order only through relative frame indices --------------------------------------------------


def test_shift_invariance_and_live_encodings():
    model = make_model(torch.float64)
    x, idx, levels, observed = make_inputs(2, 6, torch.float64)
    with torch.no_grad():
        base = model(x, idx, levels, observed)
        shifted = model(x, idx + 1234, levels, observed)
        assert_close("shifted indices", base, shifted, 1e-10)
        stretched = idx.clone()
        stretched[:, -1] += 7  # one frame moves: relative distances change
        changed = model(x, stretched, levels, observed)
    assert (changed - base).abs().max() > 1e-3, "relative encodings must affect the output"


def test_indices_do_not_matter_at_init():
    """Zero-initialised relative encodings: the fresh model ignores frame indices entirely."""
    torch.manual_seed(0)
    model = FDMUNet(SMALL).eval()
    with torch.no_grad():  # make the output visible but keep the relative nets at zero
        model.out_conv.weight.normal_()
    x, idx, levels, observed = make_inputs(1, 5)
    with torch.no_grad():
        assert_close("init", model(x, idx, levels, observed), model(x, idx * 3 + 1, levels, observed), 1e-5)


def test_permutation_equivariance():
    model = make_model(torch.float64)
    x, idx, levels, observed = make_inputs(2, 6, torch.float64)
    valid = torch.tensor([[True] * 6, [True, False, True, True, False, True]])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        out = model(x, idx, levels, observed, valid)
        out_p = model(x[:, perm], idx[:, perm], levels[:, perm], observed[:, perm], valid[:, perm])
    assert_close("permuted", out[:, perm], out_p, 1e-10)


# ---- padding isolation -------------------------------------------------------------------------


def test_padding_isolation():
    model = make_model(torch.float64)
    x, idx, levels, observed = make_inputs(2, 7, torch.float64)
    valid = torch.tensor([[True, True, False, True, False, True, True], [True] * 4 + [False] * 3])
    pad = ~valid
    with torch.no_grad():
        out = model(x, idx, levels, observed, valid)
        x2, idx2, levels2, obs2 = x.clone(), idx.clone(), levels.clone(), observed.clone()
        x2[pad] = torch.randn_like(x2[pad]) * 5
        idx2[pad] = idx2[pad] + torch.tensor([100, 3, 41, 7, 9])
        levels2[pad] = 321.5
        obs2[pad] = ~obs2[pad]
        out2 = model(x2, idx2, levels2, obs2, valid)
        assert_close("real frames", out[valid], out2[valid], 1e-10)
        # The real frames see exactly what they would see alone.
        alone = model(x[1:, :4], idx[1:, :4], levels[1:, :4], observed[1:, :4])
        assert_close("alone", alone[0], out[1, :4], 1e-10)
        # Without the mask the same change leaks into real frames: the check above is not vacuous.
        leak = model(x, idx, levels, observed) - model(x2, idx2, levels2, obs2)
    assert leak[valid].abs().max() > 1e-3


# ---- temporal attention math -------------------------------------------------------------------


def naive_temporal_attention(q, k, v, rel, mask):
    """Loop form of score_ij = (q_i.k_j + q_i.R_ij + R_ij.k_j)/sqrt(D), out_i = sum_j p_ij (v_j + R_ij)."""
    B, S, n, Fr, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for s in range(S):
            for h in range(n):
                for i in range(Fr):
                    scores, values = [], []
                    for j in range(Fr):
                        if mask is not None and not mask[b, i, j]:
                            continue
                        r = rel[b, h, i, j] if rel is not None else torch.zeros(D, dtype=q.dtype)
                        qi, kj = q[b, s, h, i], k[b, s, h, j]
                        scores.append(((qi @ kj + qi @ r + r @ kj) / math.sqrt(D)).item())
                        values.append(v[b, s, h, j] + r)
                    p = torch.tensor(scores, dtype=q.dtype).softmax(0)
                    out[b, s, h, i] = sum(pj * vj for pj, vj in zip(p, values))
    return out


@pytest.mark.parametrize("with_rel", [True, False], ids=["rel", "norel"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "nomask"])
def test_temporal_attention_matches_naive(with_rel, with_mask):
    g = torch.Generator().manual_seed(0)
    B, S, n, Fr, D = 2, 3, 2, 5, 4
    q, k, v = (torch.randn(B, S, n, Fr, D, generator=g, dtype=torch.float64) for _ in range(3))
    rel = torch.randn(B, n, Fr, Fr, D, generator=g, dtype=torch.float64) if with_rel else None
    mask = None
    if with_mask:
        valid = torch.tensor([[True, True, False, True, False], [True, True, True, True, False]])
        mask = valid[:, :, None] == valid[:, None, :]
    expected = naive_temporal_attention(q, k, v, rel, mask)
    assert_close("ref", expected, temporal_attention_ref(q, k, v, rel, mask), 1e-10)
    assert_close("dispatch", expected, temporal_attention(q, k, v, rel, mask), 1e-10)


def test_zero_rel_shortcut_matches_general_path_and_trains():
    """At init the no-grad path skips R (SDPA); with grad it keeps R = 0 and gets its gradient."""
    torch.manual_seed(0)
    model = FDMUNet(SMALL).double()
    with torch.no_grad():  # everything live except the relative nets' zero output layers
        for name, p in model.named_parameters():
            if ".rel.out." not in name:
                p.add_(0.1 * torch.randn_like(p))
    x, idx, levels, observed = make_inputs(1, 5, torch.float64)
    valid = torch.tensor([[True, True, True, False, True]])
    with torch.no_grad():
        fast = model(x, idx, levels, observed, valid)
    general = model(x, idx, levels, observed, valid)
    assert_close("shortcut", general.detach(), fast, 1e-10)
    general.square().sum().backward()
    rel_out = model.middle[1].temporal.rel.out.weight
    assert rel_out.grad is not None and rel_out.grad.abs().max() > 0


# ---- configs and presets ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_json_round_trip(name):
    cfg = fdm_preset(name)
    assert FDMUNetConfig.from_dict(cfg.to_dict()) == cfg
    assert FDMUNetConfig.from_json(cfg.to_json()) == cfg


def test_small_config_round_trip_and_build():
    assert FDMUNetConfig.from_json(SMALL.to_json()) == SMALL
    model = build_model("fdm", SMALL.to_dict())
    assert model.config == SMALL


def test_default_channel_mult_and_errors():
    assert FDMUNetConfig(image_size=32).mults == (1, 2, 2, 2)
    assert FDMUNetConfig(image_size=64).mults == (1, 2, 3, 4)
    assert FDMUNetConfig(image_size=128).mults == (1, 1, 2, 3, 4)
    with pytest.raises(FdmError, match="unknown FDM preset 'nope'"):
        fdm_preset("nope")
    with pytest.raises(FdmError, match="num_heads"):
        FDMUNetConfig(image_size=32, base_channels=30, num_heads=8)
    with pytest.raises(FdmError, match="no default channel_mult"):
        FDMUNetConfig(image_size=48)
    with pytest.raises(FdmError, match="unknown field"):
        FDMUNetConfig.from_dict({"image_size": 32, "bogus": 1})


def test_group_norm_groups_are_gcd_safe():
    model = FDMUNet(FDMUNetConfig(image_size=16, base_channels=24, channel_mult=(1, 2), num_heads=3))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert {m.num_groups for m in norms} >= {8}  # 24 channels -> gcd(32, 24) = 8 groups
