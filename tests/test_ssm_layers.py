"""The SSM model layers (fdm_engine.models.ssm_layers): S4D's initialisation and config, the
bidirectional layer's layouts, modes and gradients, and the seed's names for its two mixes."""

from __future__ import annotations

import pytest
import torch

from fdm_engine.errors import FdmError
from fdm_engine.models.ssm_layers import BiS4D, BiS4DConfig, S4D, S4DConfig
from test_kernels import assert_close, make_s4d

# ---- S4D ---------------------------------------------------------------------------------------


def test_s4d_init_is_s4d_lin():
    m = S4D(S4DConfig(channels=5, state_size=8, dt_min=1e-3, dt_max=1e-1))
    dt = m.log_dt.exp()
    assert ((dt >= 1e-3) & (dt <= 1e-1)).all()
    assert torch.allclose(-m.log_A_real.exp(), torch.full((5, 4), -0.5))
    assert torch.allclose(m.A_imag, torch.pi * torch.arange(4.0).repeat(5, 1))
    assert m.C.shape == (5, 4, 2) and m.D.shape == (5,)


def test_s4d_module_scan_and_conv_agree_in_float32():
    m = make_s4d(H=8, N=64, dtype=torch.float32)
    m_scan = S4D(m.config.replace(chunk=32))  # 9 chunks: exercises the cross-chunk scan
    m_scan.load_state_dict(m.state_dict())
    u = torch.randn(2, 8, 257)
    assert_close("scan vs conv", m(u, mode="conv"), m_scan(u, mode="scan"), 1e-4)


def test_s4d_config_round_trip_and_errors():
    cfg = S4DConfig(channels=4, state_size=8, mode="conv", chunk=16)
    assert S4DConfig.from_json(cfg.to_json()) == cfg
    for bad in (dict(state_size=7), dict(mode="fft"), dict(dt_min=0.2, dt_max=0.1), dict(chunk=-1)):
        with pytest.raises(FdmError):
            S4DConfig(channels=4, **bad)
    with pytest.raises(FdmError, match=r"\[B, 4, L\]"):
        S4D(cfg)(torch.randn(2, 5, 3))


# ---- bidirectional layer -----------------------------------------------------------------------


@pytest.mark.parametrize("mix", ["sum", "glu"])
def test_bi_s4d_layouts_modes_and_gradients(mix):
    torch.manual_seed(0)
    C, B, Fr, H, W = 8, 2, 11, 3, 2
    layer = BiS4D(BiS4DConfig(channels=C, state_size=16, mlp_hidden=32, mix=mix, chunk=4)).double()
    video = torch.randn(B, Fr, C, H, W, dtype=torch.float64, requires_grad=True)
    out5 = layer(video)
    assert out5.shape == video.shape
    tokens = video.permute(0, 3, 4, 1, 2).reshape(B * H * W, Fr, C)
    assert_close("tokens", out5.permute(0, 3, 4, 1, 2).reshape(B * H * W, Fr, C), layer(tokens), 1e-12)
    folded = video.reshape(B * Fr, C, H, W)
    assert_close("folded", out5.reshape(B * Fr, C, H, W), layer(folded, frames=Fr), 1e-12)
    assert_close("conv mode", out5, layer(video, mode="conv"), 1e-10)
    out5.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bi_s4d_is_bidirectional_and_position_independent():
    """Changing frame 5 changes outputs before and after it, only at that spatial position."""
    torch.manual_seed(0)
    layer = BiS4D(BiS4DConfig(channels=4, state_size=8, mlp_hidden=16)).double()
    x = torch.randn(3, 10, 4, dtype=torch.float64)
    x2 = x.clone()
    x2[1, 5] += 1.0
    diff = (layer(x2) - layer(x)).abs().amax(-1)  # [3, 10]
    assert diff[1, :5].min() > 0 and diff[1, 6:].min() > 0
    assert diff[0].max() == 0 and diff[2].max() == 0


def test_bi_s4d_config_and_errors():
    cfg = BiS4DConfig(channels=4, mix="glu", mode="conv")
    assert BiS4DConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(FdmError, match="mix"):
        BiS4DConfig(channels=4, mix="v9")
    with pytest.raises(FdmError, match="frames=F"):
        BiS4D(BiS4DConfig(channels=4, state_size=8))(torch.randn(6, 4, 2, 2))


@pytest.mark.parametrize("seed_name,mix", [("v16", "sum"), ("16", "sum"), (16, "sum"), ("v8", "glu"), ("8", "glu"), (8, "glu")])
def test_bi_s4d_accepts_the_seeds_version_names(seed_name, mix):
    """`--s4d_version 16` / the former `version="v8"` name the same layer as mix="sum" / "glu"."""
    assert BiS4DConfig(channels=4, mix=seed_name) == BiS4DConfig(channels=4, mix=mix)
    old = BiS4DConfig.from_dict({"channels": 4, "version": seed_name})  # the field's former name
    assert old.mix == mix
    torch.manual_seed(0)
    a = BiS4D(BiS4DConfig(channels=4, state_size=8, mlp_hidden=8, mix=seed_name))
    torch.manual_seed(0)
    b = BiS4D(BiS4DConfig(channels=4, state_size=8, mlp_hidden=8, mix=mix))
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(2, 5, 4)
    assert torch.equal(a(x), b(x))
