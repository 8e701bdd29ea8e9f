"""RaMViD checkpoints (seed 001; Tobi-r9/RaMViD, built on improved-diffusion).

Its trainer saves bare state dicts of its 3D UNet (`model{step}.pt`, `ema_{rate}_{step}.pt`);
the architecture and diffusion live only in the flags the user trained with, so conversion
takes them again: `--flags "--image_size 64 --num_channels 128 --num_res_blocks 3
--scale_time_dim 0 --diffusion_steps 1000 --noise_schedule linear"`. Unset flags take the
defaults of the published `scripts/video_train.py`.

The published network maps onto our RaMViDUNet with `observed_plane=False` (its conditioning
frames are given clean, with no marker plane) and one timestep per clip; layouts that differ:

- attention qkv is a 1x1 Conv1d whose rows are grouped per head as (q, k, v); ours is a Linear
  with rows grouped (q, k, v) then heads, so the rows are permuted;
- `learn_sigma` models have 2C output channels: the first C are the mean (eps / x0), the only
  ones our samplers use, so the output conv keeps those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models.blocks import Downsample, ResBlock, Upsample
from fdm_engine.models.ramvid_unet import JointAttention, RaMViDUNet, RaMViDUNetConfig
from fdm_engine.published import PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, load_pickle
from fdm_engine.published.keymap import (KeyMap, conv1x1_to_linear, flags_like, parse_flags,
                                         refuse_unsupported_unet_flags, strip_prefix)

WHAT = "ramvid --flags"

# scripts/video_train.py: its own defaults updated with script_util.model_and_diffusion_defaults().
TRAIN_DEFAULTS: dict[str, Any] = dict(
    data_dir="", schedule_sampler="uniform", lr=1e-4, weight_decay=0.0, lr_anneal_steps=0, batch_size=64,
    microbatch=32, ema_rate="0.9999", log_interval=10, save_interval=2000, resume_checkpoint="", use_fp16=False,
    fp16_scale_growth=1e-3, clip=1, seed=123, anneal_type=None, steps_drop=0.0, drop=0.0, decay=0.0, seq_len=20,
    max_num_mask_frames=4, mask_range=None, uncondition_rate=0.0, exclude_conditional=True,
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    attention_resolutions="16,8", dropout=0.0, learn_sigma=False, sigma_small=False, class_cond=False,
    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False,
    rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False, use_scale_shift_norm=True,
    scale_time_dim=20, rgb=True,
)
FLAGS = flags_like(TRAIN_DEFAULTS)

# script_util.create_model: channel multipliers by image size (no other size is accepted).
CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 2, 3, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


def read_flags(flags: str | None, what: str = WHAT) -> dict[str, Any]:
    """The published training arguments from the user's flag string."""
    return parse_flags(flags, FLAGS, what)


def model_config(args: dict[str, Any], what: str = WHAT) -> RaMViDUNetConfig:
    """Our RaMViDUNetConfig for the published arguments (FdmError for what we cannot reproduce)."""
    size = args["image_size"]
    if size not in CHANNEL_MULT:
        raise FdmError(f"{what}: --image_size {size} is not one RaMViD builds (it has {sorted(CHANNEL_MULT)})")
    if args["class_cond"]:
        raise FdmError(f"{what}: --class_cond True (class-conditional RaMViD) is not supported")
    refuse_unsupported_unet_flags(what, args, dash="--")
    mults = CHANNEL_MULT[size]
    widths = {m * args["num_channels"] for m in mults} | {args["num_channels"]}
    if any(w % 32 for w in widths):
        raise FdmError(f"{what}: --num_channels {args['num_channels']} gives widths {sorted(widths)}; "
                       f"RaMViD's GroupNorm(32) needs multiples of 32")
    try:
        res = tuple(int(r) for r in str(args["attention_resolutions"]).split(",") if r.strip())
    except ValueError:
        raise FdmError(f"{what}: --attention_resolutions {args['attention_resolutions']!r} is not a "
                       f"comma-separated list of integers") from None
    # The published net attends where the down-sampling rate ds = 2^level is image_size // r.
    attention = tuple(sorted({size // (size // r) for r in res if 0 < r <= size}, reverse=True))
    levels = len(mults) - 1
    S = args["scale_time_dim"]
    if S and S % 2 ** levels:
        # The published net halves time while S >> level > 0 and up-samples back to S >> level
        # frames: for clips of S frames that is our halving exactly when 2^levels divides S.
        raise FdmError(f"{what}: --scale_time_dim {S} is not supported: time down-sampling matches ours "
                       f"only for 0 or a multiple of {2 ** levels} (the clip length it was trained on)")
    steps = args["diffusion_steps"]
    return RaMViDUNetConfig(
        image_size=size, channels=3 if args["rgb"] else 1, base_channels=args["num_channels"],
        channel_mult=mults, num_res_blocks=args["num_res_blocks"], attention_resolutions=attention,
        num_heads=args["num_heads"], dropout=float(args["dropout"]), scale_time_dim=bool(S),
        num_frames=S or args["seq_len"], observed_plane=False,
        time_scale=1000.0 / steps if args["rescale_timesteps"] else 1.0,
    )


def diffusion_config(args: dict[str, Any], what: str = WHAT) -> DiffusionConfig:
    if args["noise_schedule"] not in ("linear", "cosine"):
        raise FdmError(f"{what}: --noise_schedule {args['noise_schedule']!r} is unknown (linear, cosine)")
    return DiffusionConfig(schedule=args["noise_schedule"], num_steps=args["diffusion_steps"],
                           prediction="x0" if args["predict_xstart"] else "eps")


def notes(args: dict[str, Any]) -> list[str]:
    """What the user should know about the conversion (printed once)."""
    out = []
    if args["learn_sigma"]:
        out.append("learn_sigma model: the mean (first half) output channels are used, the variance ones dropped")
    return out


def key_map(model: RaMViDUNet, learn_sigma: bool = False) -> KeyMap:
    """Rules from the published UNetModel's keys to ours (module doc for the layouts that differ)."""
    km = KeyMap()
    own = model.state_dict()

    def plain(ours: str, published: str) -> None:
        km.add(ours, published, own[ours].shape)

    for i in (0, 2):
        for p in ("weight", "bias"):
            plain(f"time_embed.mlp.{i}.{p}", f"time_embed.{i}.{p}")
    for p in ("weight", "bias"):
        plain(f"in_conv.{p}", f"input_blocks.0.0.{p}")
    stages = [(f"down.{i}", f"input_blocks.{i + 1}", s) for i, s in enumerate(model.down)]
    stages += [("middle", "middle_block", model.middle)]
    stages += [(f"up.{i}", f"output_blocks.{i}", s) for i, s in enumerate(model.up)]
    for ours, theirs, stage in stages:
        for j, layer in enumerate(stage):
            _layer_rules(km, own, f"{ours}.{j}", f"{theirs}.{j}", layer, model.config.num_heads)
    C = model.config.channels
    for p in ("weight", "bias"):
        plain(f"out_norm.{p}", f"out.0.{p}")
    if learn_sigma:
        w, b = own["out_conv.weight"].shape, own["out_conv.bias"].shape
        km.add("out_conv.weight", "out.2.weight", (2 * C, *w[1:]), lambda t: t[:C])
        km.add("out_conv.bias", "out.2.bias", (2 * C,), lambda t: t[:C])
    else:
        plain("out_conv.weight", "out.2.weight")
        plain("out_conv.bias", "out.2.bias")
    return km


def _layer_rules(km: KeyMap, own: dict, ours: str, theirs: str, layer, heads: int) -> None:
    def plain(o: str, t: str) -> None:
        for p in ("weight", "bias"):
            if f"{ours}.{o}.{p}" in own:
                km.add(f"{ours}.{o}.{p}", f"{theirs}.{t}.{p}", own[f"{ours}.{o}.{p}"].shape)

    if isinstance(layer, ResBlock):
        for o, t in (("in_norm", "in_layers.0"), ("in_conv", "in_layers.2"), ("emb", "emb_layers.1"),
                     ("out_norm", "out_layers.0"), ("out_conv", "out_layers.3"), ("skip", "skip_connection")):
            plain(o, t)
    elif isinstance(layer, JointAttention):
        plain("norm", "norm")
        C = own[f"{ours}.proj.weight"].shape[0]
        qkv = lambda t: qkv_heads_first_to_ours(t, heads)  # noqa: E731
        km.add(f"{ours}.qkv.weight", f"{theirs}.qkv.weight", (3 * C, C, 1), qkv)
        km.add(f"{ours}.qkv.bias", f"{theirs}.qkv.bias", (3 * C,), qkv)
        km.add(f"{ours}.proj.weight", f"{theirs}.proj_out.weight", (C, C, 1), conv1x1_to_linear)
        km.add(f"{ours}.proj.bias", f"{theirs}.proj_out.bias", (C,))
    elif isinstance(layer, Downsample):
        plain("conv", "op")
    elif isinstance(layer, Upsample):
        plain("conv", "conv")
    else:  # pragma: no cover - a new layer type needs a rule here
        raise TypeError(f"no RaMViD key rule for {type(layer).__name__}")


def qkv_heads_first_to_ours(t: torch.Tensor, heads: int) -> torch.Tensor:
    """improved-diffusion's qkv rows (head, q/k/v, d) -> ours (q/k/v, head, d).

    t: the Conv1d weight [3C, C, 1] (-> Linear weight [3C, C]) or its bias [3C] (-> [3C])."""
    rows = t.shape[0]
    cols = t.shape[1:2]  # (C,) for the weight, () for the bias
    t = t.reshape(heads, 3, rows // (3 * heads), *cols).transpose(0, 1)  # [3, heads, d(, C)]
    return t.reshape(rows, *cols)


def translate(state: dict[str, Any], src: Path | str, flags: str | None) -> LoadedPublished:
    """A published RaMViD state dict and its flags in our terms (module doc)."""
    what = f"{src}: --flags"
    args = read_flags(flags, what)
    cfg = model_config(args, what)
    with torch.device("meta"):  # shapes only: no memory, no init
        model = RaMViDUNet(cfg)
    weights = key_map(model, learn_sigma=args["learn_sigma"]).convert(strip_prefix(state, "module."), src, "the model the --flags describe")
    return LoadedPublished(
        model_name="ramvid", model_config=cfg.to_dict(), state_dict=weights, diffusion=diffusion_config(args, what),
        conventions={"timestep": "one per clip: the latent frames'", "observed_input": "clean",
                     "timestep_scale": cfg.time_scale, "data_range": [-1, 1], "clip_denoised": True,
                     "variance": "fixed_small" if args["sigma_small"] else "fixed_large"},
        extra={"max_latent_frames": max(1, cfg.num_frames - args["max_num_mask_frames"])},
        notes=notes(args), used_ema=Path(src).name.startswith("ema_"),
    )


def convert(state: dict[str, Any], src: Path | str, flags: str | None):
    """(model, diffusion config, notes): our model holding the converted weights."""
    loaded = translate(state, src, flags)
    model = RaMViDUNet(RaMViDUNetConfig.from_dict(loaded.model_config))
    model.load_state_dict(loaded.state_dict, strict=True)
    return model, loaded.diffusion, loaded.notes


class RamvidFormat(PublishedFormat):
    needs = "flags"
    needs_hint = ('--flags "--image_size 64 --num_channels 128 --num_res_blocks 3 --scale_time_dim 0 '
                  '--diffusion_steps 1000 --noise_schedule linear"')
    description = "RaMViD state dicts (model*.pt, ema_*.pt): architecture and diffusion from --flags"

    def detect(self, obj: Any) -> bool:
        w = obj.get("input_blocks.0.0.weight") if isinstance(obj, dict) else None
        return isinstance(w, torch.Tensor) and w.dim() == 5 and not any(
            isinstance(k, str) and "temporal_attention" in k for k in obj)

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        if config_file is not None:
            raise FdmError(f"{path}: --from ramvid takes its settings from --flags, not --config")
        obj = load_pickle(path)
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise FdmError(f"{path}: not a RaMViD checkpoint (expected a state dict: names -> tensors)")
        return translate(obj, path, flags)


PUBLISHED_FORMATS.register("ramvid", RamvidFormat())
