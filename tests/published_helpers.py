"""Shared by the published-checkpoint tests: state dicts laid out as the published codebases name
them (written from reading their model code; no published code here), and access to a local copy
of the published repositories for the equivalence checks.

FDM_PUBLISHED_SRC=/path holds one folder per repository (e.g. /path/flexible-video-diffusion-modeling,
/path/RaMViD); the equivalence tests are skipped where it is unset or lacks the repository.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

PUBLISHED_SRC_ENV = "FDM_PUBLISHED_SRC"
FDM_REPO = "flexible-video-diffusion-modeling"


def published_repo(repo: str) -> Path:
    """The local copy of published repository `repo`, or skip the test."""
    root = os.environ.get(PUBLISHED_SRC_ENV)
    if not root:
        pytest.skip(f"{PUBLISHED_SRC_ENV} is not set (a folder holding the published repositories)")
    path = Path(root) / repo
    if not path.is_dir():
        pytest.skip(f"{PUBLISHED_SRC_ENV}={root} has no {repo}/")
    return path


def published_module(repo: str, module: str):
    """`import module` from the local copy of `repo` (its root first on sys.path), or skip.

    Modules of the same top-level name from another repository are dropped first, so two
    repositories that both ship e.g. `improved_diffusion` do not see each other's code.
    """
    path = str(published_repo(repo))
    top = module.split(".")[0]
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if not origin.startswith(path):
            del sys.modules[name]
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{repo}: cannot import {module} ({e}); install what it needs")


class Payload:
    """Unpickling this creates `marker`: what a hostile checkpoint would do, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes; norm weights near 1 so activations keep their scale."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g) * scale
        if len(shape) == 1 and ("norm" in name or "in_layers.0" in name or "out_layers.0" in name
                                or name.startswith("out.0")) and name.endswith("weight"):
            t = 1 + t
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------
# FDM (flexible-video-diffusion-modeling): improved_diffusion.unet.UNetVideoModel

FDM_CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4)}


def fdm_published_shapes(image_size: int = 32, num_channels: int = 32, num_res_blocks: int = 1,
                         attention_resolutions: str = "16,8", learn_sigma: bool = False, *,
                         mults: tuple[int, ...] | None = None, dims: int = 2, in_planes: int = 4,
                         attention=None) -> dict[str, tuple]:
    """Names and shapes of a published UNetVideoModel's state dict, default flags otherwise
    (scale-shift ResBlocks, relative-position nets on q, k and v of every temporal attention).

    Other improved-diffusion UNets share the layout: `dims=3` gives 3x3x3 convs (RaMViD),
    `in_planes` the input conv's planes, `attention(shapes, prefix, channels)` another attention
    block's tensors."""
    C, E = num_channels, 4 * num_channels
    factors = {image_size // int(r) for r in attention_resolutions.split(",")}
    shapes: dict[str, tuple] = {}

    def linear(name, cin, cout):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin), (cout,)

    def conv(name, cin, cout, k=3):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin) + (k,) * dims, (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resblock(p, cin, cout):
        norm(f"{p}.in_layers.0", cin)
        conv(f"{p}.in_layers.2", cin, cout)
        linear(f"{p}.emb_layers.1", E, 2 * cout)  # scale and shift
        norm(f"{p}.out_layers.0", cout)
        conv(f"{p}.out_layers.3", cout, cout)
        if cin != cout:
            conv(f"{p}.skip_connection", cin, cout, k=1)

    def fdm_attention(p, c):
        for part in ("spatial_attention", "temporal_attention"):
            linear(f"{p}.{part}.qkv", c, 3 * c)
            linear(f"{p}.{part}.proj_out", c, c)
            norm(f"{p}.{part}.norm", c)
        for r in "qkv":
            net = f"{p}.temporal_attention.rpe_{r}.rpe_net"
            linear(f"{net}.embed_distances", 3, c)
            linear(f"{net}.embed_diffusion_time", E, c)
            linear(f"{net}.out", c, c)

    attention = fdm_attention if attention is None else (lambda p, c, hook=attention: hook(shapes, p, c))
    mults = mults or FDM_CHANNEL_MULT[image_size]
    linear("time_embed.0", C, E)
    linear("time_embed.2", E, E)
    conv("input_blocks.0.0", in_planes, C)  # FDM: RGB + the observed-frame indicator
    skips, ch, factor, block = [C], C, 1, 1
    for level, m in enumerate(mults):
        for _ in range(num_res_blocks):
            resblock(f"input_blocks.{block}.0", ch, m * C)
            ch = m * C
            if factor in factors:
                attention(f"input_blocks.{block}.1", ch)
            skips.append(ch)
            block += 1
        if level < len(mults) - 1:
            conv(f"input_blocks.{block}.0.op", ch, ch)
            skips.append(ch)
            block, factor = block + 1, factor * 2
    resblock("middle_block.0", ch, ch)
    attention("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    block = 0
    for level, m in reversed(list(enumerate(mults))):
        for i in range(num_res_blocks + 1):
            resblock(f"output_blocks.{block}.0", ch + skips.pop(), m * C)
            ch, slot = m * C, 1
            if factor in factors:
                attention(f"output_blocks.{block}.1", ch)
                slot = 2
            if level and i == num_res_blocks:
                conv(f"output_blocks.{block}.{slot}.conv", ch, ch)
                factor //= 2
            block += 1
    norm("out.0", ch)
    conv("out.2", ch, 6 if learn_sigma else 3)
    return shapes


def fdm_published_config(**overrides) -> dict:
    """A training-arguments dict as the published video_train.py saves it (small model)."""
    config = dict(
        dataset="carla_no_traffic", schedule_sampler="uniform", lr=1e-4, weight_decay=0.0, lr_anneal_steps=0,
        batch_size=2, microbatch=-1, ema_rate="0.9999", log_interval=10, save_interval=50000,
        resume_checkpoint="", use_fp16=False, fp16_scale_growth=1e-3, resume_id="", num_workers=1,
        pad_with_random_frames=True, max_frames=4, T=1000, sample_interval=50000,
        image_size=32, num_channels=32, num_res_blocks=1, num_heads=4, num_heads_upsample=-1,
        attention_resolutions="16,8", dropout=0.0, learn_sigma=False, sigma_small=False, class_cond=False,
        diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False,
        predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False,
        use_scale_shift_norm=True, use_rpe_net=True,
    )
    config.update(overrides)
    return config


def write_fdm_published(path: Path, seed: int = 0, step: int = 10, state=None, **overrides) -> Path:
    """A published-FDM checkpoint file (TrainLoop.save layout) with random weights."""
    config = fdm_published_config(**overrides)
    if state is None:
        state = random_state(fdm_published_shapes(config["image_size"], config["num_channels"],
                                                  config["num_res_blocks"], config["attention_resolutions"],
                                                  config["learn_sigma"]), seed)
    torch.save({"state_dict": state, "config": config, "step": step}, path)
    return path


# ---------------------------------------------------------------------------------------------
# video_diffusion (swookey-thinky): its VDM config and the state dict of GaussianDiffusion_DDPM
# around score_networks.unet_3d.Unet, as its trainer saves them.

VDM_TARGET = "video_diffusion.score_networks.unet_3d.Unet"


def vd_config(frames: int = 4, size: int = 16, features: int = 32, mults=(1, 2), attention=(8,), blocks=1,
              num_scales: int = 64, **params) -> dict:
    """configs/moving_mnist/video_diffusion_models.yaml, shrunk (its structure and defaults kept)."""
    attn = dict(context_dim=-1, heads=4, dim_head=32, dropout=0.1)
    score = dict(
        input_channels=1, output_channels=1, input_spatial_size=size, input_number_of_frames=frames,
        num_features=features, channel_multipliers=list(mults), attention_resolutions=list(attention),
        num_resnet_blocks=blocks, use_scale_shift_norm=True, resamp_with_conv=False, resblock_updown=False,
        resnet_block_type="biggan", dropout=0.1, mlp_layers=2, is_learned_sigma=False,
        is_class_conditional=False, num_classes=10,
        conditioning=dict(
            signals=["timestep"],
            projections=dict(timestep=dict(
                target="video_diffusion.layers.embedding.InvCosTimestepEmbeddingProjection",
                params=dict(num_features=features, time_embedding_mult=4, max_time=1.0, clip_min=-20, clip_max=20))),
            context_transformer_head=[dict(target="video_diffusion.layers.embedding.RunProjection",
                                           params=dict(input_context_key="logsnr_t",
                                                       output_context_key="timestep_embedding",
                                                       projection_key="timestep"))],
            spatial_context_transformer_layer=dict(target="video_diffusion.layers.attention.SpatialCrossAttention",
                                                   params=dict(attn)),
            temporal_context_transformer_layer=dict(
                target="video_diffusion.layers.attention.TemporalSelfAttention",
                params=dict(attn, temporal_sequence_length=frames, max_relative_position=frames)),
        ),
    )
    score.update(params)
    return dict(
        diffusion=dict(
            parameterization="v",
            sampling=dict(output_channels=1, output_spatial_size=size, output_frames=frames,
                          target="video_diffusion.samplers.ancestral.AncestralSampler",
                          params=dict(reconstruction_guidance=True)),
            noise_scheduler=dict(target="video_diffusion.scheduler.ContinuousNoiseScheduler",
                                 params=dict(num_scales=num_scales, logsnr_schedule="cosine", loss_type="l2",
                                             logsnr_min=-20, logsnr_max=20)),
            importance_sampler=dict(target="video_diffusion.importance_sampling.UniformSampler",
                                    params=dict(num_timesteps=num_scales)),
            context_preprocessing=[dict(target="video_diffusion.context.IgnoreContextAdapter", params={})],
            input_preprocessing=dict(target="video_diffusion.context.IgnoreInputPreprocessor", params={}),
            classifier_free_guidance=dict(classifier_free_guidance=0.0, unconditional_guidance_probability=0.0,
                                          signals=[], unconditional_context=dict(target="torch.nn.Identity",
                                                                                 params={})),
            score_network=dict(target=VDM_TARGET, params=score),
        ),
        data=dict(image_size=size, num_channels=1, num_classes=10, input_number_of_frames=frames),
    )


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of nested dicts / lists / scalars (as the published configs are written)."""
    pad = " " * indent

    def scalar(v):
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if v == {}:
            return "{}"
        return str(v)

    out = []
    for k, v in value.items():
        if isinstance(v, dict) and v:
            out.append(f"{pad}{k}:  # {k}\n" + to_yaml(v, indent + 2))
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            out.append(f"{pad}{k}:\n" + "".join(
                f"{pad}  - " + to_yaml(x, indent + 4).lstrip() for x in v))
        else:
            out.append(f"{pad}{k}: {scalar(v)}\n")
    return "".join(out)


def vd_published_shapes(config: dict) -> dict[str, tuple]:
    """Names and shapes of GaussianDiffusion_DDPM.state_dict() for the config's unet_3d.Unet."""
    p = config["diffusion"]["score_network"]["params"]
    cond = p["conditioning"]
    C, base, E = p["input_channels"], p["num_features"], 4 * p["num_features"]
    tf = cond["projections"]["timestep"]["params"]["num_features"]
    mults, n_res = p["channel_multipliers"], p["num_resnet_blocks"]
    n_res = n_res if isinstance(n_res, list) else [n_res] * len(mults)
    attention_ds = {p["input_spatial_size"] // r for r in p["attention_resolutions"]}
    tp = cond["temporal_context_transformer_layer"]["params"]
    conv = (1, 3, 3)
    net: dict[str, tuple] = {}

    def linear(name, cin, cout, bias=True):
        net[f"{name}.weight"] = (cout, cin)
        if bias:
            net[f"{name}.bias"] = (cout,)

    def norm(name, c):
        net[f"{name}.weight"], net[f"{name}.bias"] = (c,), (c,)

    def conv3(name, cin, cout, k=conv, bias=True):
        net[f"{name}.weight"] = (cout, cin, *k)
        if bias:
            net[f"{name}.bias"] = (cout,)

    def resblock(pre, cin, cout):
        norm(f"{pre}.in_layers.0", cin)
        conv3(f"{pre}.in_layers.2", cin, cout)
        width = 2 * cout if p["use_scale_shift_norm"] else cout
        for k in range(p["mlp_layers"]):
            cin_k = E if k == 0 else width
            linear(f"{pre}.emb_layers.{k}.fc1", cin_k, cin_k)
            linear(f"{pre}.emb_layers.{k}.fc2", cin_k, width)
        norm(f"{pre}.out_layers.0", cout)
        conv3(f"{pre}.out_layers.3", cout, cout)
        if cin != cout:
            conv3(f"{pre}.skip_connection", cin, cout, conv if p["resamp_with_conv"] else (1, 1, 1))

    def attention(pre, c, temporal):
        norm(f"{pre}.fn._norm", c)
        net[f"{pre}.fn._qkv.weight"], net[f"{pre}.fn._qkv.bias"] = (3 * c, c, 1), (3 * c,)
        net[f"{pre}.fn._proj_out.weight"], net[f"{pre}.fn._proj_out.bias"] = (c, c, 1), (c,)
        if temporal:
            d = tp["dim_head"]
            for table in ("_k_embeddings_table", "_v_embeddings_table"):
                net[f"{pre}.fn._attention.{table}"] = (c // d, 2 * tp["max_relative_position"] - 1, d)

    def mixers(pre, start, c):
        attention(f"{pre}.{start}", c, False)
        attention(f"{pre}.{start + 1}", c, True)

    def resample(pre, c, kind):
        if p["resblock_updown"]:
            resblock(pre, c, c)
        elif p["resamp_with_conv"]:
            conv3(f"{pre}.{'op' if kind == 'down' else 'conv'}", c, c)

    for pre in ("_projections", "_context_transformers.0._projections"):
        linear(f"{pre}.timestep._projection.1", tf, E)
        linear(f"{pre}.timestep._projection.3", E, E)
    conv3("_initial_convolution", C, base, bias=False)
    skips, ch, ds, i = [base], base, 1, 0
    for level, m in enumerate(mults):
        for _ in range(n_res[level]):
            resblock(f"downs.{i}.0", ch, m * base)
            ch = m * base
            if ds in attention_ds:
                mixers(f"downs.{i}", 1, ch)
            skips.append(ch)
            i += 1
        if level < len(mults) - 1:
            resample(f"downs.{i}.0", ch, "down")
            skips.append(ch)
            i, ds = i + 1, ds * 2
    resblock("middle.0", ch, ch)
    mixers("middle", 1, ch)
    resblock("middle.3", ch, ch)
    i = 0
    for level, m in reversed(list(enumerate(mults))):
        for r in range(n_res[level] + 1):
            resblock(f"ups.{i}.0", ch + skips.pop(), m * base)
            ch, slot = m * base, 1
            if ds in attention_ds:
                mixers(f"ups.{i}", 1, ch)
                slot = 3
            if level and r == n_res[level]:
                resample(f"ups.{i}.{slot}", ch, "up")
                ds //= 2
            i += 1
    norm("final_projection.0", base)
    conv3("final_projection.2", base, 2 * C if p["is_learned_sigma"] else C, bias=False)
    shapes = {f"_score_network.{k}": v for k, v in net.items()}
    n = config["diffusion"]["noise_scheduler"]["params"]["num_scales"]
    shapes.update({f"_noise_scheduler.{k}": (n + 1,) for k in ("gammas", "alphas", "sigma2", "sqrt_sigma2")})
    return shapes


def write_vd_published(folder: Path, config: dict | None = None, seed: int = 0, state=None) -> tuple[Path, Path]:
    """(diffusion-{step}.pt as its trainer saves it, the YAML config) with random weights."""
    config = config or vd_config()
    if state is None:
        state = random_state(vd_published_shapes(config), seed)
        for k in [k for k in state if k.endswith("_projection.1.weight") or k.endswith("_projection.3.weight")]:
            state[k.replace("_context_transformers.0.", "")] = state[k]  # one module under two names
    ckpt, cfg = Path(folder) / "diffusion-100.pt", Path(folder) / "video_diffusion_models.yaml"
    torch.save({"step": 100, "model_state_dict": state, "num_optimizers": 1, "optimizer_state_dicts": [{}],
                "loss": 0.25, "config": config}, ckpt)
    cfg.write_text("# Video Diffusion Models\n" + to_yaml(config))
    return ckpt, cfg
