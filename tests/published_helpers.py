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
