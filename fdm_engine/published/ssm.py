"""SSM checkpoints (seed 000; shim0114/SSM-Meets-Video-Diffusion-Models).

Its Trainer saves `model-{milestone}.pt` = {"step", "model", "ema", "opt", "scaler"}, where
"model" and "ema" are state dicts of its GaussianDiffusion: the schedule buffers plus the
DataParallel-wrapped `Unet3D` under `denoise_fn.module.`. The architecture lives only in the flags
of `train_video-diffusion.py`, so conversion takes them again (unset flags: the script's
defaults). Both of its scripts are read: the one the paper's README uses (`past_repo/`, flags
`--s4d_version/--s4d_hidden_dim/--s4d_linear_dim`) and the current one (`--ssm_*`).

The network is our UNet3D (fdm_engine.models.unet3d). Temporal layers supported: `attn` and
`bi-s4d` with `--s4d_version 16` (input MLP, summed scans, MLP) or `8` (GLU-gated scans, MLP),
the two the paper reports; the other versions and layers are refused by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models.unet3d import (
    LinearSpatialAttention,
    PreNorm,
    ResBlock,
    SpatialAttention,
    TemporalAttention,
    TemporalS4D,
    UNet3D,
    UNet3DConfig,
)
from fdm_engine.published import PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, load_pickle
from fdm_engine.published.keymap import Flag, KeyMap, conv1x1_to_linear, parse_flags, strip_prefix

WHAT = "ssm --flags"


def _bool(text: str) -> bool:
    return bool(text)  # argparse's type=bool: any non-empty value is True


# train_video-diffusion.py (both versions), plus the sampling / evaluation scripts' own flags so
# a user may paste any of their commands.
FLAGS: dict[str, Flag] = {
    "image_size": Flag(64, int), "channels": Flag(3, int), "num_frames": Flag(16, int),
    "base_channel_size": Flag(256, int), "timeemb_linears": Flag(2, int), "attn_heads": Flag(8, int),
    "attn_dim_head": Flag(64, int),
    "ssm_hidden_dim": Flag(16, int), "ssm_linear_dim": Flag(None, int), "ssm_version": Flag(None, int),
    "s4d_hidden_dim": Flag(None, int), "s4d_linear_dim": Flag(None, int), "s4d_version": Flag(None, int),
    "temporal_layer": Flag("attn"), "timesteps": Flag(1000, int), "loss_type": Flag("l2"),
    "train_batch_size": Flag(16, int), "train_lr": Flag(1e-4, float), "beta1": Flag(0.9, float),
    "beta2": Flag(0.999, float), "save_and_sample_every": Flag(1000, int), "train_num_steps": Flag(700000, int),
    "gradient_accumulate_every": Flag(4, int), "ema_decay": Flag(0.995, float), "amp": Flag(False, _bool),
    "dataset": Flag("movingmnist"), "folder": Flag(None), "results_folder": Flag(None),
    "device_ids": Flag([0, 1, 2], int, many=True), "seed": Flag(0, int), "use_cond": Flag(False, _bool),
    "cond_folder": Flag(None), "csv_path": Flag(None),
    "num_samples": Flag(100, int), "sample_batch_size": Flag(16, int), "sample_save_every": Flag(100, int),
    "milestone": Flag(None, int), "sample_seeds": Flag(None, int, many=True), "eval_batch_size": Flag(16, int),
}
DIM_MULTS = (1, 2, 4, 8)  # fixed in the scripts
# --s4d_version -> (BiS4D mix, input MLP, GELU before the output MLP)
S4D_VERSIONS = {16: ("sum", True, False), 8: ("glu", False, False)}
PREFIX = "denoise_fn.module."


def read_flags(flags: str | None, what: str = WHAT) -> dict[str, Any]:
    return parse_flags(flags, FLAGS, what)


def model_config(args: dict[str, Any], what: str = WHAT) -> UNet3DConfig:
    """Our UNet3DConfig for the published arguments (FdmError for what we cannot reproduce)."""
    if args["use_cond"]:
        raise FdmError(f"{what}: --use_cond (text-conditional Unet3D) is not supported")
    layer = args["temporal_layer"]
    ssm: dict[str, Any] = {}
    if layer == "bi-s4d":
        if args["s4d_version"] is None and args["ssm_version"] is not None:
            raise FdmError(f"{what}: --ssm_version {args['ssm_version']} (the current script's S4D layers) is not "
                           f"supported; supported: the paper's --s4d_version {' or '.join(map(str, S4D_VERSIONS))}")
        version = args["s4d_version"]
        if version is None:
            raise FdmError(f"{what}: --temporal_layer bi-s4d needs --s4d_version (the published model refuses "
                           f"to build without one)")
        if version not in S4D_VERSIONS:
            raise FdmError(f"{what}: --s4d_version {version} is not supported "
                           f"(supported: {', '.join(map(str, S4D_VERSIONS))})")
        width = args["attn_heads"] * args["attn_dim_head"]  # the past script's default for both
        name, input_mlp, gelu_first = S4D_VERSIONS[version]
        ssm = dict(ssm_state_size=args["s4d_hidden_dim"] or width, ssm_mlp_hidden=args["s4d_linear_dim"] or width,
                   ssm_mix=name, ssm_input_mlp=input_mlp, ssm_gelu_first=gelu_first)
    elif layer != "attn":
        raise FdmError(f"{what}: --temporal_layer {layer!r} is not supported (supported: attn, bi-s4d)")
    return UNet3DConfig(
        image_size=args["image_size"], channels=args["channels"], dim=args["base_channel_size"],
        dim_mults=DIM_MULTS, time_mult=32, time_linears=args["timeemb_linears"], attn_heads=args["attn_heads"],
        attn_dim_head=args["attn_dim_head"], spatial_dim_head=32, temporal_layer=layer,
        num_frames=args["num_frames"], **ssm,
    )


def diffusion_config(args: dict[str, Any]) -> DiffusionConfig:
    # Its GaussianDiffusion: cosine betas (clipped at 0.9999 where ours clip at 0.999: only the
    # last step differs), eps prediction.
    return DiffusionConfig(schedule="cosine", num_steps=args["timesteps"], prediction="eps")


def key_map(model: UNet3D) -> KeyMap:
    """Rules from the published Unet3D's keys (without `denoise_fn.module.`) to ours."""
    km = KeyMap()
    own = model.state_dict()

    def plain(ours: str, theirs: str) -> None:
        for p in ("weight", "bias", "gamma"):
            if f"{ours}.{p}" in own:
                shape = own[f"{ours}.{p}"].shape
                if p == "gamma":  # theirs is [1, C, 1, 1, 1]
                    km.add(f"{ours}.{p}", f"{theirs}.{p}", (1, shape[0], 1, 1, 1), lambda t: t.reshape(-1))
                else:
                    km.add(f"{ours}.{p}", f"{theirs}.{p}", shape)

    for i in range(len(model.time_embed)):
        plain(f"time_embed.{i}", f"time_mlp.{1 + 2 * i}")
    plain("rel_bias", "time_rel_pos_bias.relative_attention_bias")
    plain("in_conv", "init_conv")
    _block(km, own, plain, "in_temporal", "init_temporal_layer", model.in_temporal)
    for path, level_list in (("downs", model.downs), ("ups", model.ups)):
        for i, level in enumerate(level_list):
            for j, part in enumerate(("res1", "res2", "spatial", "temporal", "resample")):
                _block(km, own, plain, f"{path}.{i}.{part}", f"{path}.{i}.{j}", getattr(level, part))
    for ours, theirs in (("mid_res1", "mid_block1"), ("mid_spatial", "mid_spatial_attn"),
                         ("mid_temporal", "mid_temporal_layer"), ("mid_res2", "mid_block2")):
        _block(km, own, plain, ours, theirs, getattr(model, ours))
    _block(km, own, plain, "out_block", "final_conv.0", model.out_block)
    plain("out_conv", "final_conv.1")
    return km


def _block(km: KeyMap, own: dict, plain, ours: str, theirs: str, module) -> None:
    if isinstance(module, ResBlock):
        if module.emb is not None:
            plain(f"{ours}.emb", f"{theirs}.mlp.1")
        for b in ("block1", "block2"):
            plain(f"{ours}.{b}.conv", f"{theirs}.{b}.proj")
            plain(f"{ours}.{b}.norm", f"{theirs}.{b}.norm")
        plain(f"{ours}.skip", f"{theirs}.res_conv")
    elif isinstance(module, PreNorm):
        plain(f"{ours}.norm", f"{theirs}.fn.norm")
        fn = module.fn
        # Linear spatial attention sits directly in PreNorm; the others inside EinopsToAndFrom.
        inner = f"{theirs}.fn.fn" if isinstance(fn, LinearSpatialAttention) else f"{theirs}.fn.fn.fn"
        if isinstance(fn, LinearSpatialAttention):
            plain(f"{ours}.fn.qkv", f"{inner}.to_qkv")
            plain(f"{ours}.fn.out", f"{inner}.to_out")
        elif isinstance(fn, (SpatialAttention, TemporalAttention)):
            plain(f"{ours}.fn.qkv", f"{inner}.to_qkv")
            plain(f"{ours}.fn.out", f"{inner}.to_out")
            if isinstance(fn, TemporalAttention):  # the shared rotary table: constant, not ours to keep
                km.ignored += (f"{inner}.rotary_emb.freqs",)
        elif isinstance(fn, TemporalS4D):
            _s4d_rules(km, own, plain, f"{ours}.fn.mixer", inner)
        else:  # pragma: no cover
            raise TypeError(f"no SSM key rule for {type(fn).__name__}")
    elif isinstance(module, torch.nn.Identity):
        pass
    else:  # down / up convs
        plain(ours, theirs)


def _s4d_rules(km: KeyMap, own: dict, plain, ours: str, theirs: str) -> None:
    for mine, published in (("fwd", "s4d"), ("bwd", "s4d_rev")):
        km.add(f"{ours}.{mine}.D", f"{theirs}.{published}.D", own[f"{ours}.{mine}.D"].shape)
        for p in ("C", "log_dt", "log_A_real", "A_imag"):
            km.add(f"{ours}.{mine}.{p}", f"{theirs}.{published}.kernel.{p}", own[f"{ours}.{mine}.{p}"].shape)
    for mine, published in (("gate_fwd", "s4d.output_linear.0"), ("gate_bwd", "s4d_rev.output_linear.0")):
        if f"{ours}.{mine}.weight" in own:  # v8: the GLU's 1x1 Conv1d
            w = own[f"{ours}.{mine}.weight"].shape
            km.add(f"{ours}.{mine}.weight", f"{theirs}.{published}.weight", (*w, 1), conv1x1_to_linear)
            km.add(f"{ours}.{mine}.bias", f"{theirs}.{published}.bias", own[f"{ours}.{mine}.bias"].shape)
    plain(f"{ours}.fc_in1", f"{theirs}.fc01")
    plain(f"{ours}.fc_in2", f"{theirs}.fc02")
    plain(f"{ours}.fc1", f"{theirs}.fc1")
    plain(f"{ours}.fc2", f"{theirs}.fc2")


SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def unet_state(state: dict[str, Any], src: Path | str, args: dict[str, Any], part: str) -> dict[str, Any]:
    """The Unet3D state dict inside a GaussianDiffusion state dict (or a bare Unet3D one), its
    schedule buffers checked against --timesteps."""
    betas = state.get("betas")
    if isinstance(betas, torch.Tensor) and betas.shape != (args["timesteps"],):
        raise FdmError(f"{src}: [{part!r}] 'betas' has shape {tuple(betas.shape)} but --timesteps "
                       f"{args['timesteps']} needs ({args['timesteps']},)")
    inner = {k: v for k, v in state.items() if k not in SCHEDULE_BUFFERS}
    inner = strip_prefix(inner, "denoise_fn.")
    return strip_prefix(inner, "module.")


def translate(checkpoint: dict[str, Any], src: Path | str, flags: str | None, part: str = "ema"):
    """(LoadedPublished for `part` ("ema" or "model", the other when absent), the converted
    states of every part present) for a published SSM checkpoint (the Trainer's dict, or a bare
    GaussianDiffusion / Unet3D state dict) and its flags."""
    what = f"{src}: --flags"
    args = read_flags(flags, what)
    cfg = model_config(args, what)
    with torch.device("meta"):  # shapes only: no memory, no init
        model = UNet3D(cfg)
    km = key_map(model)
    parts = [p for p in ("model", "ema") if isinstance(checkpoint.get(p), dict)]
    if not parts:
        parts, checkpoint = ["model"], {"model": checkpoint}
    states = {p: km.convert(unet_state(checkpoint[p], src, args, p), src, "the model the --flags describe") for p in parts}
    used = part if part in states else parts[0]
    step = checkpoint.get("step")
    notes = [f"using the {used!r} weights of the checkpoint"] if len(parts) > 1 else []
    loaded = LoadedPublished(
        model_name="unet3d", model_config=cfg.to_dict(), state_dict=states[used], diffusion=diffusion_config(args),
        conventions={"timestep": "one per clip: the latent frames'", "observed_input": "clean",
                     "data_range": [-1, 1], "clip_denoised": True, "variance": "fixed_large"},
        extra={"step": step} if isinstance(step, int) else {}, notes=notes, used_ema=used == "ema",
    )
    return loaded, states


def convert(checkpoint: dict[str, Any], src: Path | str, flags: str | None):
    """(model holding the 'model' weights, the 'ema' state or None, diffusion config, extra)."""
    loaded, states = translate(checkpoint, src, flags, part="model")
    model = UNet3D(UNet3DConfig.from_dict(loaded.model_config))
    model.load_state_dict(states["model"], strict=True)
    return model, states.get("ema"), loaded.diffusion, loaded.extra


class SsmFormat(PublishedFormat):
    needs = "flags"
    needs_hint = ('--flags "--timesteps 256 --base_channel_size 64 --timeemb_linears 2 --temporal_layer bi-s4d '
                  '--s4d_version 16 --image_size 32 --num_frames 16"')
    description = "SSM-Meets-Video-Diffusion-Models Trainer files (model-N.pt): architecture from --flags"

    def detect(self, obj: Any) -> bool:
        state = obj.get("ema") if isinstance(obj, dict) else None
        return isinstance(state, dict) and f"{PREFIX}init_conv.weight" in state

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        if config_file is not None:
            raise FdmError(f"{path}: --from ssm takes its settings from --flags, not --config")
        obj = load_pickle(path)
        if not isinstance(obj, dict):
            raise FdmError(f"{path}: not an SSM checkpoint (expected the Trainer's dict with 'model' and 'ema')")
        return translate(obj, path, flags)[0]


PUBLISHED_FORMATS.register("ssm", SsmFormat())
