"""RaMViD and SSM checkpoints in their published layouts: flags, key maps, bad inputs, round trip
(video_diffusion: tests/test_published_video_diffusion.py).

The published state dicts are built here from the published module trees as their code lays
them out (key names, shapes); no published code is imported (tests/test_published_others_
equivalence.py compares against the published networks themselves where they are available).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fdm_engine.checkpoint import load_checkpoint, save_checkpoint
from fdm_engine.errors import FdmError
from cli_helpers import run_fdm
from published_helpers import Payload as _Payload, fdm_published_shapes, random_state
from fdm_engine.published import keymap, ramvid, ssm

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- flag strings ---------------------------------------------------------------------------------


def test_flags_follow_argparse_rules():
    args = ramvid.read_flags("--image_size=32 --num_ch 64 --rgb False --learn_sigma t --num_channels 96")
    assert args["image_size"] == 32 and args["num_channels"] == 96  # later flags win; prefix; --a=b
    assert args["rgb"] is False and args["learn_sigma"] is True
    assert args["seq_len"] == 20 and args["scale_time_dim"] == 20  # video_train.py's defaults
    assert ssm.read_flags("--device_ids 0 1 2 --timesteps 256")["device_ids"] == [0, 1, 2]


@pytest.mark.parametrize("flags,needle", [
    (None, "--flags is required"),
    ("--no_such_flag 3", "unknown flag --no_such_flag"),
    ("--num 3", "ambiguous"),
    ("--image_size big", "--image_size 'big' is not a valid value"),
    ("--image_size", "--image_size needs a value"),
    ("image_size 32", "expected a --flag"),
    ("--rgb maybe", "--rgb 'maybe'"),
])
def test_bad_flag_strings(flags, needle):
    with pytest.raises(FdmError, match=needle.replace("(", r"\(")):
        ramvid.read_flags(flags)


# ---- RaMViD ---------------------------------------------------------------------------------------

RAMVID_FLAGS = "--image_size 32 --num_channels 32 --num_res_blocks 1 --scale_time_dim 0 --seq_len 4"


def _ramvid_attention(shapes, p, c):
    """improved-diffusion's AttentionBlock: GroupNorm, 1x1 Conv1d qkv and output projection."""
    shapes.update({f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,), f"{p}.qkv.weight": (3 * c, c, 1),
                   f"{p}.qkv.bias": (3 * c,), f"{p}.proj_out.weight": (c, c, 1), f"{p}.proj_out.bias": (c,)})


def ramvid_published_shapes(out=3):
    """Key -> shape of RaMViD's 3D UNetModel for RAMVID_FLAGS (improved-diffusion's layout, 3x3x3
    convs, RGB input with no marker plane, attention at 16 and 8)."""
    return fdm_published_shapes(32, 32, 1, "16,8", learn_sigma=out == 6, mults=(1, 2, 2, 2), dims=3,
                                in_planes=3, attention=_ramvid_attention)


def test_ramvid_published_layout_loads():
    state = random_state(ramvid_published_shapes())
    model, diffusion, notes = ramvid.convert(state, "model000100.pt", RAMVID_FLAGS)
    own = model.state_dict()
    assert len(own) == len(state) and notes == []
    assert torch.equal(own["in_conv.weight"], state["input_blocks.0.0.weight"])  # no marker plane
    assert torch.equal(own["out_conv.weight"], state["out.2.weight"])
    cfg = model.config
    assert (cfg.observed_plane, cfg.scale_time_dim, cfg.num_frames, cfg.time_scale) == (False, False, 4, 1.0)
    assert cfg.attention_resolutions == (16, 8) and cfg.mults == (1, 2, 2, 2)
    assert (diffusion.schedule, diffusion.num_steps, diffusion.prediction) == ("linear", 1000, "eps")


def published_attention(x, norm_w, norm_b, qkv_w, qkv_b, proj_w, proj_b, heads):
    """improved-diffusion's AttentionBlock on x [B, C, F, H, W], written from its description:
    GroupNorm(32), 1x1 qkv conv, channels split per head as (q, k, v), softmax(q k / sqrt(d)) v."""
    B, C = x.shape[:2]
    h = F.group_norm(x.reshape(B, C, -1), 32, norm_w, norm_b)
    qkv = F.conv1d(h, qkv_w, qkv_b).reshape(B * heads, 3 * C // heads, -1)
    q, k, v = qkv.split(C // heads, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(C // heads), dim=-1)
    out = F.conv1d(torch.einsum("bts,bcs->bct", w, v).reshape(B, C, -1), proj_w, proj_b)
    return x + out.reshape(x.shape)


def test_ramvid_attention_rows_are_permuted_per_head():
    state = random_state(ramvid_published_shapes(), seed=3)
    model, _, _ = ramvid.convert(state, "m.pt", RAMVID_FLAGS)
    block = model.middle[1]  # middle attention: 64 channels, 4 heads
    x = torch.randn(2, 64, 3, 4, 4)
    p = "middle_block.1"
    want = published_attention(x, state[f"{p}.norm.weight"], state[f"{p}.norm.bias"], state[f"{p}.qkv.weight"],
                               state[f"{p}.qkv.bias"], state[f"{p}.proj_out.weight"], state[f"{p}.proj_out.bias"], 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_ramvid_learn_sigma_keeps_mean_channels_and_rescales_time():
    shapes = ramvid_published_shapes(out=6)
    state = random_state(shapes)
    model, diffusion, notes = ramvid.convert(state, "m.pt", RAMVID_FLAGS + " --learn_sigma True --diffusion_steps 250 "
                                             "--predict_xstart True --noise_schedule cosine")
    assert torch.equal(model.state_dict()["out_conv.weight"], state["out.2.weight"][:3])
    assert torch.equal(model.state_dict()["out_conv.bias"], state["out.2.bias"][:3])
    assert model.config.time_scale == 4.0 and "learn_sigma" in notes[0]
    assert (diffusion.schedule, diffusion.num_steps, diffusion.prediction) == ("cosine", 250, "x0")


def test_ramvid_mismatches_name_key_and_shapes():
    state = random_state(ramvid_published_shapes())
    with pytest.raises(FdmError, match=r"m\.pt: 'input_blocks\.1\.0\.in_layers\.2\.weight' has shape "
                                       r"\[64, 32, 3, 3, 3\] in the file but \[32, 32, 3, 3, 3\]"):
        ramvid.convert(_widen(state), "m.pt", RAMVID_FLAGS)
    missing = dict(state)
    del missing["middle_block.1.qkv.bias"]
    with pytest.raises(FdmError, match=r"missing key 'middle_block\.1\.qkv\.bias' \(expected by .*, shape \[192\]\)"):
        ramvid.convert(missing, "m.pt", RAMVID_FLAGS)
    with pytest.raises(FdmError, match=r"unexpected key 'input_blocks\.2\.0\.op\.weight' \(not in the model the --flags describe"):
        ramvid.convert(state, "m.pt", RAMVID_FLAGS.replace("--num_res_blocks 1", "--num_res_blocks 2"))
    with pytest.raises(FdmError, match="--flags is required"):
        ramvid.convert(state, "m.pt", None)


def _widen(state):
    """The state with one tensor of the wrong shape (first res block's conv, double width)."""
    bad = dict(state)
    bad["input_blocks.1.0.in_layers.2.weight"] = torch.zeros(64, 32, 3, 3, 3)
    return bad


@pytest.mark.parametrize("flags,needle", [
    ("--scale_time_dim 20", "--scale_time_dim 20 is not supported"),
    ("--class_cond True", "--class_cond"),
    ("--use_scale_shift_norm False", "--use_scale_shift_norm False"),
    ("--image_size 48", "--image_size 48"),
    ("--num_channels 48", "multiples of 32"),
    ("--num_heads_upsample 2", "--num_heads_upsample 2"),
])
def test_ramvid_refuses_what_it_cannot_reproduce(flags, needle):
    with pytest.raises(FdmError, match=needle):
        ramvid.model_config(ramvid.read_flags(flags))


def test_ramvid_time_downsampling_for_a_power_of_two_clip():
    cfg = ramvid.model_config(ramvid.read_flags("--image_size 32 --scale_time_dim 8"))
    assert cfg.scale_time_dim and cfg.num_frames == 8 and cfg.time_factor == 8


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_ramvid_converted_round_trips_bit_exact(tmp_path, suffix):
    state = random_state(ramvid_published_shapes())
    model, diffusion, _ = ramvid.convert(state, "m.pt", RAMVID_FLAGS)
    path = save_checkpoint(tmp_path / f"ramvid{suffix}", model, diffusion)
    loaded = load_checkpoint(path)
    assert loaded.model.config == model.config and loaded.diffusion == diffusion
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    x = torch.randn(1, 4, 3, 32, 32)
    args = (torch.arange(4)[None], torch.tensor([[0.0, 0.0, 500.0, 500.0]]), torch.tensor([[True, True, False, False]]))
    with torch.no_grad():
        assert torch.equal(loaded.model(x, *args), model.eval()(x, *args))


# ---- SSM ------------------------------------------------------------------------------------------

SSM_FLAGS = "--image_size 16 --base_channel_size 16 --attn_heads 2 --attn_dim_head 8 --num_frames 5 --timesteps 64"
BI_S4D = " --temporal_layer bi-s4d --s4d_version 16 --s4d_hidden_dim 8 --s4d_linear_dim 12"


def ssm_checkpoint(flags, seed=0):
    """A Trainer checkpoint in the published layout: GaussianDiffusion state dicts whose Unet3D keys
    sit under `denoise_fn.module.`, plus the schedule buffers, step, optimizer and scaler states."""
    args = ssm.read_flags(flags)
    model = ssm.UNet3D(ssm.model_config(args))
    shapes = ssm.key_map(model).expected()
    T = args["timesteps"]

    def diffusion_state(s):
        state = {f"denoise_fn.module.{k}": v for k, v in random_state(shapes, s).items()}
        state.update({name: torch.rand(T) for name in ssm.SCHEDULE_BUFFERS})
        return state

    return {"step": 900, "model": diffusion_state(seed), "ema": diffusion_state(seed + 1),
            "opt": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "scaler": {"scale": 65536.0}}


@pytest.mark.parametrize("layer,key,shape", [
    ("", "init_temporal_layer.fn.fn.fn.to_qkv.weight", (48, 16)),  # 2 heads x 8, no bias
    ("", "downs.0.2.fn.fn.to_qkv.weight", (192, 16, 1, 1)),  # linear attention: 2 heads x 32
    ("", "mid_spatial_attn.fn.fn.fn.to_out.weight", (128, 64)),
    ("", "time_mlp.3.weight", (512, 512)),  # time embedding 32 x dim
    ("", "time_rel_pos_bias.relative_attention_bias.weight", (32, 2)),
    ("", "ups.0.4.weight", (64, 64, 1, 4, 4)),  # transposed conv: [in, out, ...]
    ("", "final_conv.0.res_conv.weight", (16, 32, 1, 1, 1)),
    ("", "downs.1.3.fn.norm.gamma", (1, 32, 1, 1, 1)),
    (BI_S4D, "downs.1.3.fn.fn.fn.s4d.kernel.C", (32, 4, 2)),  # N = 8: 4 complex modes
    (BI_S4D, "downs.1.3.fn.fn.fn.s4d_rev.D", (32,)),
    (BI_S4D, "downs.1.3.fn.fn.fn.fc01.weight", (12, 32)),
    (BI_S4D, "downs.1.3.fn.fn.fn.fc2.weight", (32, 12)),
])
def test_ssm_key_map_uses_published_names(layer, key, shape):
    model = ssm.UNet3D(ssm.model_config(ssm.read_flags(SSM_FLAGS + layer)))
    assert ssm.key_map(model).expected()[key] == shape


def test_ssm_bi_s4d_versions():
    v16 = ssm.model_config(ssm.read_flags(SSM_FLAGS + BI_S4D))
    assert (v16.ssm_mix, v16.ssm_input_mlp, v16.ssm_gelu_first, v16.ssm_state_size) == ("sum", True, False, 8)
    v8 = ssm.model_config(ssm.read_flags(SSM_FLAGS + " --temporal_layer bi-s4d --s4d_version 8"))
    assert (v8.ssm_mix, v8.ssm_input_mlp, v8.ssm_state_size, v8.ssm_mlp_hidden) == ("glu", False, 16, 16)
    keys = ssm.key_map(ssm.UNet3D(v8)).expected()
    assert keys["mid_temporal_layer.fn.fn.fn.s4d.output_linear.0.weight"] == (256, 128, 1)  # mid: 8 x 16


@pytest.mark.parametrize("layer", ["", BI_S4D])
def test_ssm_checkpoint_loads_model_and_ema(tmp_path, layer):
    ckpt = ssm_checkpoint(SSM_FLAGS + layer)
    model, ema, diffusion, extra = ssm.convert(ckpt, "model-9.pt", SSM_FLAGS + layer)
    assert extra == {"step": 900} and (diffusion.schedule, diffusion.num_steps) == ("cosine", 64)
    assert torch.equal(model.state_dict()["in_conv.weight"], ckpt["model"]["denoise_fn.module.init_conv.weight"])
    assert torch.equal(ema["in_conv.weight"], ckpt["ema"]["denoise_fn.module.init_conv.weight"])
    path = save_checkpoint(tmp_path / "ssm.safetensors", model, diffusion, ema_state=ema, extra=extra)
    loaded = load_checkpoint(path, use_ema=True)
    assert loaded.used_ema and loaded.extra == extra
    for k, v in ema.items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_ssm_bad_inputs():
    flags = SSM_FLAGS + BI_S4D
    ckpt = ssm_checkpoint(flags)
    with pytest.raises(FdmError, match=r"'betas' has shape \(64,\) but --timesteps 100 needs \(100,\)"):
        ssm.convert(ckpt, "m.pt", flags.replace("--timesteps 64", "--timesteps 100"))
    with pytest.raises(FdmError, match=r"'init_temporal_layer\.fn\.fn\.fn\.s4d\.kernel\.C' has shape \[16, 4, 2\] in the file "
                                       r"but \[16, 8, 2\]"):
        ssm.convert(ckpt, "m.pt", flags.replace("--s4d_hidden_dim 8", "--s4d_hidden_dim 16"))
    with pytest.raises(FdmError, match="unexpected key 'init_temporal_layer.fn.fn.fn.fc01.weight'"):
        ssm.convert(ckpt, "m.pt", flags.replace("--s4d_version 16", "--s4d_version 8"))
    for bad, needle in (("--temporal_layer bi-s6", "'bi-s6' is not supported"),
                        ("--temporal_layer bi-s4d", "needs --s4d_version"),
                        ("--temporal_layer bi-s4d --s4d_version 20", "--s4d_version 20 is not supported"),
                        ("--temporal_layer bi-s4d --ssm_version 1", "--ssm_version 1")):
        with pytest.raises(FdmError, match=needle):
            ssm.model_config(ssm.read_flags(SSM_FLAGS + " " + bad))


def test_bi_s4d_published_v16_formula():
    """BiS4D(input_mlp, gelu_first=False) = fc2(gelu(fc1(S4D(u') + flip S4D(flip u')))), u' = fc02(gelu(fc01(u)))."""
    from fdm_engine.models.ssm_layers import BiS4D, BiS4DConfig

    mix = BiS4D(BiS4DConfig(6, 8, 10, "sum", input_mlp=True, gelu_first=False, mode="conv"))
    x = torch.randn(3, 7, 6)
    with torch.no_grad():
        u = mix.fc_in2(F.gelu(mix.fc_in1(x))).transpose(1, 2)
        z = mix.fwd(u, "conv") + mix.bwd(u.flip(-1), "conv").flip(-1)
        want = mix.fc2(F.gelu(mix.fc1(z.transpose(1, 2))))
        torch.testing.assert_close(mix.mix(x), want)


def test_strip_prefix_only_when_every_key_has_it():
    assert keymap.strip_prefix({"module.a": 1, "module.b": 2}, "module.") == {"a": 1, "b": 2}
    assert keymap.strip_prefix({"module.a": 1, "b": 2}, "module.") == {"module.a": 1, "b": 2}


# ---- `fdm convert --from ramvid / ssm` ------------------------------------------------------------


def _cli_error(capsys, *argv) -> str:
    code, out, err = run_fdm(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("fmt", ["ramvid", "ssm"])
def test_cli_convert_round_trips_bit_exactly(capsys, tmp_path, fmt):
    if fmt == "ramvid":
        src, flags = tmp_path / "ema_0.9999_000100.pt", RAMVID_FLAGS
        source = random_state(ramvid_published_shapes())
        torch.save(source, src)
        want = ramvid.convert(source, src, flags)[0].state_dict()
    else:
        src, flags = tmp_path / "model-3.pt", SSM_FLAGS + BI_S4D
        ckpt = ssm_checkpoint(flags)
        torch.save(ckpt, src)
        _, want, _, _ = ssm.convert(ckpt, src, flags)  # the EMA weights are the ones converted
    dst = tmp_path / f"{fmt}.safetensors"
    code, out, err = run_fdm(capsys, "convert", src, dst, "--from", fmt, "--flags", flags)
    assert code == 0, err
    assert f"from the published {fmt} checkpoint" in out
    loaded = load_checkpoint(dst)
    assert loaded.extra["published"]["format"] == fmt
    assert loaded.model_name == {"ramvid": "ramvid", "ssm": "unet3d"}[fmt]
    for k, v in want.items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    back = tmp_path / f"{fmt}.pt"
    assert run_fdm(capsys, "convert", dst, back)[0] == 0
    again = load_checkpoint(back)
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in want.items())


def test_cli_bad_inputs(capsys, tmp_path):
    src = tmp_path / "model000100.pt"
    state = random_state(ramvid_published_shapes())
    torch.save(state, src)
    dst = tmp_path / "x.safetensors"
    err = _cli_error(capsys, "convert", src, dst, "--from", "ramvid")
    assert str(src) in err and "needs --flags" in err
    err = _cli_error(capsys, "convert", src, dst, "--from", "ramvid", "--flags", RAMVID_FLAGS + " --num_channels 64")
    assert "'time_embed.0.weight' has shape [128, 32] in the file but [256, 64]" in err
    err = _cli_error(capsys, "convert", src, dst, "--from", "ramvid", "--flags", "--bogus 1")
    assert str(src) in err and "unknown flag --bogus" in err
    ckpt = tmp_path / "model-1.pt"
    torch.save(ssm_checkpoint(SSM_FLAGS), ckpt)
    err = _cli_error(capsys, "convert", ckpt, dst)  # recognised as SSM, but its flags are needed
    assert str(ckpt) in err and "--from ssm needs --flags" in err
    err = _cli_error(capsys, "convert", ckpt, dst, "--from", "ssm", "--flags", SSM_FLAGS, "--config", src)
    assert "not --config" in err


@pytest.mark.parametrize("fmt", ["ramvid", "ssm"])
def test_cli_refuses_a_pickle_that_would_run_code(capsys, tmp_path, fmt):
    bad, marker = tmp_path / "model.pt", tmp_path / "pwned"
    torch.save({"input_blocks.0.0.weight": _Payload(marker)} if fmt == "ramvid" else
               {"step": 1, "model": {}, "ema": {"x": _Payload(marker)}}, bad)
    err = _cli_error(capsys, "convert", bad, tmp_path / "x.safetensors", "--from", fmt, "--flags", "--seed 1")
    assert str(bad) in err and "could run code" in err
    assert not marker.exists()


@pytest.mark.parametrize("args,dash,needle", [
    ({"use_scale_shift_norm": False, "num_heads_upsample": -1, "num_heads": 4}, "--", "--use_scale_shift_norm False"),
    ({"use_scale_shift_norm": True, "num_heads_upsample": 2, "num_heads": 4}, "", "num_heads_upsample 2 differs from "
                                                                                 "num_heads 4"),
])
def test_improved_diffusion_refusals_are_shared(args, dash, needle):
    """FDM (settings from the file) and RaMViD (from --flags) refuse the same UNet settings, spelled their way."""
    with pytest.raises(FdmError, match=needle):
        keymap.refuse_unsupported_unet_flags("src.pt", args, dash)
    keymap.refuse_unsupported_unet_flags("src.pt", {**args, "use_scale_shift_norm": True, "num_heads_upsample": -1})
