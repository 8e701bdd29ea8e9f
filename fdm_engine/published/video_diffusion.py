"""video_diffusion checkpoints (seed 004; swookey-thinky/video_diffusion).

Its trainer saves `diffusion-{step}.pt` = {"step", "model_state_dict", "num_optimizers",
"optimizer_state_dicts", "loss", "config"}: the state dict of its whole diffusion module (the
score network under `_score_network.`, the noise scheduler's tables under `_noise_scheduler.`).
The YAML config it was trained with (`--config`) names the score network under
`diffusion.score_network` and the diffusion under `diffusion.noise_scheduler` /
`diffusion.parameterization`. The repository holds several papers' models; the one its README
reports training, "Video Diffusion Models" (`unet_3d.Unet`, configs/moving_mnist/
video_diffusion_models.yaml), is supported: our VDUNet (fdm_engine/models/vd_unet.py) on its
continuous-time log-SNR schedule (docs/checkpoints.md, "video_diffusion"). The others are
refused by name: its FDM port (`unet_factorized3d.UNet`), Make-A-Video (`unet_pseudo3d.Unet`)
and the image models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fdm_engine.diffusion.schedule import DiffusionConfig
from fdm_engine.errors import FdmError
from fdm_engine.models.vd_unet import Resample, ResBlock, SpatialAttention, TemporalAttention, VDUNet, VDUNetConfig
from fdm_engine.published import PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, load_pickle
from fdm_engine.published.keymap import KeyMap, conv1x1_to_linear
from fdm_engine.published.yaml_subset import read_yaml

VDM = "video_diffusion.score_networks.unet_3d.Unet"
FAMILIES = {
    "video_diffusion.score_networks.unet_factorized3d.UNet":
        "its port of the FDM network is not supported yet (published FDM checkpoints: --from fdm)",
    "video_diffusion.score_networks.unet_pseudo3d.Unet":
        "Make-A-Video's pseudo-3D UNet has no fdm counterpart",
}
SCHEDULER = "video_diffusion.scheduler.ContinuousNoiseScheduler"
TIME_PROJECTION = "video_diffusion.layers.embedding.InvCosTimestepEmbeddingProjection"
SPATIAL = "video_diffusion.layers.attention.SpatialCrossAttention"
TEMPORAL = "video_diffusion.layers.attention.TemporalSelfAttention"
PREDICTIONS = {"v": "v", "epsilon": "eps"}
NET = "_score_network."
SCHED = "_noise_scheduler."


def _get(tree: Any, dotted: str, where: str, default: Any = KeyError) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is KeyError:
                raise FdmError(f"{where}: no {dotted} (not a video_diffusion config for this model)")
            return default
        node = node[part]
    return node


def _mapping(value: Any, name: str, where: str) -> dict:
    """A config section (absent: empty); anything but a mapping is one line naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FdmError(f"{where}: {name} must be a mapping (got {value!r})")
    return value


def score_network_target(cfg: Any, where: str) -> str:
    target = _get(cfg, "diffusion.score_network.target", where, None)
    if not isinstance(target, str):
        raise FdmError(f"{where}: no diffusion.score_network.target (not a video_diffusion config)")
    return target


def model_and_diffusion(cfg: dict, where: str) -> tuple[VDUNetConfig, DiffusionConfig, dict[str, Any]]:
    """Our model and diffusion configs, and the sampling extras, for a VDM config (FdmError naming
    the first setting fdm cannot reproduce)."""
    p = _mapping(_get(cfg, "diffusion.score_network.params", where), "diffusion.score_network.params", where)

    def need(key: str, want, why: str) -> None:
        if p.get(key, want) != want:
            raise FdmError(f"{where}: score_network {key} {p.get(key)!r} is not supported ({why})")

    need("is_class_conditional", False, "class-conditional VDM")
    need("resnet_block_type", "biggan", "the published Unet runs only its BigGAN blocks on video")
    if p.get("output_channels", p.get("input_channels")) != p.get("input_channels") and not p.get("is_learned_sigma"):
        raise FdmError(f"{where}: output_channels {p.get('output_channels')} differs from input_channels "
                       f"{p.get('input_channels')}")
    cond = _mapping(p.get("conditioning"), "score_network.params.conditioning", where)
    if list(cond.get("signals", [])) != ["timestep"]:
        raise FdmError(f"{where}: conditioning signals {cond.get('signals')!r}: only ['timestep'] is supported")
    proj = _mapping(_get(cond, "projections.timestep", where + ": conditioning"), "conditioning.projections.timestep", where)
    if proj.get("target") != TIME_PROJECTION:
        raise FdmError(f"{where}: timestep projection {proj.get('target')!r} is not supported "
                       f"(supported: {TIME_PROJECTION}, the log-SNR input)")
    head = cond.get("context_transformer_head")
    head = head if isinstance(head, list) else [head]
    if len(head) != 1 or _get(head[0] or {}, "params.input_context_key", where, None) != "logsnr_t":
        raise FdmError(f"{where}: context_transformer_head must be the one RunProjection of logsnr_t")
    layers = {}
    for kind, target in (("spatial", SPATIAL), ("temporal", TEMPORAL)):
        layer = _mapping(cond.get(f"{kind}_context_transformer_layer"), f"{kind}_context_transformer_layer", where)
        lp = _mapping(layer.get("params"), f"{kind}_context_transformer_layer.params", where)
        if layer.get("target") != target or lp.get("context_dim", -1) not in (-1, None):
            raise FdmError(f"{where}: {kind}_context_transformer_layer must be {target} without context "
                           f"(got {layer.get('target')!r}, context_dim {lp.get('context_dim')!r})")
        for flag in ("pre_layer_norm", "post_layer_norm"):
            if lp.get(flag):
                raise FdmError(f"{where}: {kind} attention {flag} is not supported")
        layers[kind] = lp
    tp = _mapping(proj.get("params"), "conditioning.projections.timestep.params", where)
    sched = _mapping(_get(cfg, "diffusion.noise_scheduler", where), "diffusion.noise_scheduler", where)
    if sched.get("target") != SCHEDULER:
        raise FdmError(f"{where}: noise_scheduler {sched.get('target')!r} is not supported "
                       f"(supported: {SCHEDULER}, the continuous log-SNR schedule)")
    sp = _mapping(sched.get("params"), "diffusion.noise_scheduler.params", where)
    schedule = f"logsnr-{sp.get('logsnr_schedule')}"
    parameterization = _get(cfg, "diffusion.parameterization", where)
    if parameterization not in PREDICTIONS:
        raise FdmError(f"{where}: parameterization {parameterization!r} (known: {', '.join(PREDICTIONS)})")
    if _get(cfg, "diffusion.dynamic_thresholding.enable", where, False):
        raise FdmError(f"{where}: dynamic_thresholding is not supported (fdm clamps x0 to [-1, 1])")
    mults = tuple(int(m) for m in p.get("channel_multipliers", ()))
    blocks = p.get("num_resnet_blocks", 2)
    blocks = tuple(int(b) for b in blocks) if isinstance(blocks, list) else (int(blocks),) * len(mults)
    try:
        model = VDUNetConfig(
            image_size=int(p["input_spatial_size"]), channels=int(p["input_channels"]),
            base_channels=int(p["num_features"]), channel_mult=mults, num_res_blocks=blocks,
            attention_resolutions=tuple(int(r) for r in p.get("attention_resolutions", ())),
            use_scale_shift_norm=bool(p.get("use_scale_shift_norm", False)),
            resamp_with_conv=bool(p.get("resamp_with_conv", False)), resblock_updown=bool(p.get("resblock_updown", False)),
            dropout=float(p.get("dropout", 0.0)), mlp_layers=int(p.get("mlp_layers", 1)),
            time_features=int(tp["num_features"]), time_mult=int(tp["time_embedding_mult"]),
            max_time=float(tp.get("max_time", 1000.0)), clip_min=float(tp.get("clip_min", -20)),
            clip_max=float(tp.get("clip_max", 20)),
            spatial_heads=int(layers["spatial"].get("heads", 8)), spatial_dim_head=int(layers["spatial"].get("dim_head", 64)),
            temporal_heads=int(layers["temporal"].get("heads", 8)),
            temporal_dim_head=int(layers["temporal"].get("dim_head", 64)),
            max_relative_position=int(layers["temporal"]["max_relative_position"]),
            num_frames=int(p.get("input_number_of_frames", 16)), logsnr_schedule=schedule,
            num_steps=int(sp["num_scales"]), logsnr_min=float(sp["logsnr_min"]), logsnr_max=float(sp["logsnr_max"]),
        )
        diffusion = DiffusionConfig(schedule=schedule, num_steps=model.num_steps, prediction=PREDICTIONS[parameterization],
                                    logsnr_min=model.logsnr_min, logsnr_max=model.logsnr_max)
    except KeyError as e:
        raise FdmError(f"{where}: missing setting {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise FdmError(f"{where}: a setting does not parse ({e})") from None
    except FdmError as e:
        raise FdmError(f"{where}: {e}") from None
    sampling = _get(cfg, "diffusion.sampling.params", where, {}) or {}
    extra: dict[str, Any] = {"max_latent_frames": model.num_frames}
    if sampling.get("reconstruction_guidance"):
        extra["guidance"] = {"method": "reconstruction", "weight": float(sampling.get("omega", 2.0))}
    return model, diffusion, extra


def key_map(model: VDUNet, learned_sigma: bool = False) -> KeyMap:
    """Rules from the published Unet's keys (without `_score_network.`) to ours."""
    km = KeyMap()
    own = model.state_dict()

    def plain(ours: str, theirs: str, to_linear: bool = False) -> None:
        for p in ("weight", "bias"):
            if f"{ours}.{p}" in own:
                shape = own[f"{ours}.{p}"].shape
                if to_linear and p == "weight":  # their 1x1 Conv1d is our Linear
                    km.add(f"{ours}.{p}", f"{theirs}.{p}", (*shape, 1), conv1x1_to_linear)
                else:
                    km.add(f"{ours}.{p}", f"{theirs}.{p}", shape)

    for i, published in ((0, 1), (2, 3)):
        plain(f"time_embed.{i}", f"_projections.timestep._projection.{published}")
        # Its RunProjection holds the projections too: the same tensors under a second name.
        km.ignored += tuple(f"_context_transformers.0._projections.timestep._projection.{published}.{p}"
                            for p in ("weight", "bias"))
    plain("in_conv", "_initial_convolution")
    stages = [(f"downs.{i}", s) for i, s in enumerate(model.downs)] + [("middle", model.middle)]
    stages += [(f"ups.{i}", s) for i, s in enumerate(model.ups)]
    for name, stage in stages:
        for j, layer in enumerate(stage):
            ours = theirs = f"{name}.{j}"
            if isinstance(layer, ResBlock):
                for mine, published in (("in_norm", "in_layers.0"), ("in_conv", "in_layers.2"),
                                        ("out_norm", "out_layers.0"), ("out_conv", "out_layers.3"),
                                        ("skip", "skip_connection")):
                    plain(f"{ours}.{mine}", f"{theirs}.{published}")
                for k in range(len(layer.emb)):
                    plain(f"{ours}.emb.{k}.0", f"{theirs}.emb_layers.{k}.fc1")
                    plain(f"{ours}.emb.{k}.2", f"{theirs}.emb_layers.{k}.fc2")
            elif isinstance(layer, (SpatialAttention, TemporalAttention)):
                plain(f"{ours}.norm", f"{theirs}.fn._norm")
                plain(f"{ours}.qkv", f"{theirs}.fn._qkv", to_linear=True)
                plain(f"{ours}.proj", f"{theirs}.fn._proj_out", to_linear=True)
                if isinstance(layer, TemporalAttention):
                    table = f"{theirs}.fn._attention._k_embeddings_table"
                    km.add(f"{ours}.rel_k", table, own[f"{ours}.rel_k"].shape)
                    # The value table: its forward never reads it (relative values are off).
                    km.ignored += (f"{theirs}.fn._attention._v_embeddings_table",)
            elif isinstance(layer, Resample):
                plain(f"{ours}.conv", f"{theirs}.{'conv' if layer.up else 'op'}")
            else:  # pragma: no cover
                raise TypeError(f"no video_diffusion key rule for {type(layer).__name__}")
    plain("out_norm", "final_projection.0")
    C = model.config.channels
    if learned_sigma:  # 2C outputs: the first C are the prediction, the rest the variance
        w = own["out_conv.weight"].shape
        km.add("out_conv.weight", "final_projection.2.weight", (2 * C, *w[1:]), lambda t: t[:C])
    else:
        plain("out_conv", "final_projection.2")
    return km


def translate(obj: Any, src: Path | str, cfg: dict, where: str) -> LoadedPublished:
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
        raise FdmError(f"{src}: not a video_diffusion checkpoint (expected a dict with 'model_state_dict')")
    model_cfg, diffusion, extra = model_and_diffusion(cfg, where)
    learned_sigma = bool(_get(cfg, "diffusion.score_network.params.is_learned_sigma", where, False))
    with torch.device("meta"):  # shapes only: no memory, no init
        net = VDUNet(model_cfg)
    state = obj["model_state_dict"]
    gammas = state.get(f"{SCHED}gammas")
    if isinstance(gammas, torch.Tensor) and tuple(gammas.shape) != (model_cfg.num_steps + 1,):
        raise FdmError(f"{src}: '{SCHED}gammas' has shape {list(gammas.shape)} but {where} (num_scales "
                       f"{model_cfg.num_steps}) needs [{model_cfg.num_steps + 1}]")
    inner = {k[len(NET):] if isinstance(k, str) and k.startswith(NET) else k: v
             for k, v in state.items() if not (isinstance(k, str) and k.startswith(SCHED))}
    weights = key_map(net, learned_sigma).convert(inner, src, f"the model {where} describes")
    notes = ["is_learned_sigma: the first half of the output channels (the prediction) is used, the variance "
             "half dropped"] if learned_sigma else []
    step = obj.get("step")
    return LoadedPublished(
        model_name="vd-unet", model_config=model_cfg.to_dict(), state_dict=weights, diffusion=diffusion,
        conventions={"timestep": "one per clip: the latent frames'", "time_input": "log-SNR of the timestep",
                     "observed_input": "noised, reconstruction guidance" if "guidance" in extra else "clean",
                     "data_range": [-1, 1], "clip_denoised": True, "variance": "fixed_large"},
        extra={**extra, **({"step": step} if isinstance(step, int) else {})}, notes=notes,
    )


class VideoDiffusionFormat(PublishedFormat):
    needs = "config"
    needs_hint = "e.g. --config configs/moving_mnist/video_diffusion_models.yaml"
    description = "video_diffusion trainer files (diffusion-N.pt) with the YAML config they were trained with"

    def detect(self, obj: Any) -> bool:
        return isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict) and \
            isinstance(obj.get("config"), dict) and "diffusion" in obj["config"]

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        if flags:
            raise FdmError(f"{path}: --from video-diffusion takes its settings from --config, not --flags")
        where = f"--config {config_file}"
        cfg = read_yaml(config_file)
        target = score_network_target(cfg, where)
        obj = load_pickle(path)  # refuse hostile or broken files before anything else
        if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
            raise FdmError(f"{path}: not a video_diffusion checkpoint (expected a dict with 'model_state_dict')")
        if target != VDM:
            why = FAMILIES.get(target, "no fdm architecture corresponds")
            raise FdmError(f"{path}: {where} trains {target}: {why}")
        return translate(obj, path, cfg, where)


PUBLISHED_FORMATS.register("video-diffusion", VideoDiffusionFormat())
