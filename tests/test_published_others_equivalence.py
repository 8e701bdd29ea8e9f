"""Converted RaMViD / SSM / video_diffusion networks compute what the published ones compute.

Runs only where local copies of the published repositories are present:

    FDM_PUBLISHED_SRC=/path/to/dir    holding RaMViD/, SSM-Meets-Video-Diffusion-Models/, video_diffusion/

(their code is imported from there, never copied into this repository; SSM and video_diffusion
also need `einops-exts` and `rotary-embedding-torch` installed). Each check builds the published
network from the flags / config a user trains with, gives every tensor random values, converts its
state dict with `fdm_engine.published`, and runs both networks on identical inputs: the latent
frames' outputs must agree to 1e-4 x the output's scale (fp32).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from published_helpers import PUBLISHED_SRC_ENV

ROOT = os.environ.get(PUBLISHED_SRC_ENV)
pytestmark = [
    pytest.mark.skipif(not ROOT, reason=f"set {PUBLISHED_SRC_ENV} to local copies of the published repositories"),
    pytest.mark.usefixtures("one_thread"),
]
TOL = 1e-4


def published(repo: str, *modules: str):
    """Import `modules` from the local copy of `repo` (its root on sys.path)."""
    path = Path(ROOT) / repo
    if not path.is_dir():
        pytest.skip(f"{path} is missing")
    sys.path.insert(0, str(path))
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(str(path))


def randomize(net: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Every parameter random (published inits zero the output layers, which would hide errors);
    norms' scales stay near 1 so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not p.requires_grad:  # constants stored as parameters (rotary frequencies)
                continue
            noise = torch.randn(p.shape, generator=g) * scale
            if name.endswith(("norm.weight", "gamma", "in_layers.0.weight", "out_layers.0.weight", "out.0.weight")):
                p.copy_(1 + noise)
            else:
                p.copy_(noise)


def report(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"{name}: max|diff| = {diff:.3g}, output scale (max|out|) = {scale:.3g}, ratio = {diff / scale:.3g}")
    return diff / scale


class _Stub(types.ModuleType):
    """Any attribute, any call: a module the published network imports but never uses."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(name)

    def __call__(self, *args, **kwargs):
        return _Stub("call")


def stub_missing(*names: str) -> None:
    """Stand-ins for the modules in `names` that are not installed."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _Stub(name)


# ---- RaMViD -----------------------------------------------------------------------------------


RAMVID_FLAGS = ("--image_size 32 --num_channels 32 --num_res_blocks 1 --scale_time_dim 0 "
                "--diffusion_steps 1000 --noise_schedule linear --seq_len 6")


@pytest.mark.parametrize("flags", [
    RAMVID_FLAGS,
    RAMVID_FLAGS + " --learn_sigma True --diffusion_steps 250",  # variance channels dropped, t rescaled
    RAMVID_FLAGS.replace("--scale_time_dim 0", "--scale_time_dim 8").replace("--seq_len 6", "--seq_len 8"),
])
def test_ramvid_matches_published(flags):
    (script_util,) = published("RaMViD", "diffusion_openai.script_util")
    from fdm_engine.published import ramvid

    args = ramvid.read_flags(flags)
    keys = script_util.model_and_diffusion_defaults().keys()
    net, diffusion = script_util.create_model_and_diffusion(**{k: args[k] for k in keys})
    randomize(net)
    net.eval()
    ours, _, _ = ramvid.convert(net.state_dict(), "published.pt", flags)
    ours.eval()

    B, Fr, C, H = 2, args["seq_len"], 3, args["image_size"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, Fr, C, H, H, generator=g)
    t = torch.tensor([37, args["diffusion_steps"] - 13])
    observed = torch.zeros(B, Fr, dtype=torch.bool)
    observed[0, :2] = True  # clip 0: two conditioning frames (given clean); clip 1: none
    with torch.no_grad():
        theirs = diffusion._wrap_model(net)(x.permute(0, 2, 1, 3, 4), t)[:, :C].transpose(1, 2)  # t rescaled as sampling does
        mine = ours(x, torch.arange(Fr).repeat(B, 1), torch.where(observed, 0, t[:, None]).float(), observed)
    latent = ~observed
    assert report(f"ramvid [{flags}]", mine[latent], theirs[latent]) <= TOL


# ---- SSM --------------------------------------------------------------------------------------


def import_ssm(folder: str):
    """The SSM repository's model module from `folder` ("" = the current code, "past_repo" = the
    paper's); its data / logging imports (torchvision, wandb) are stubbed: the network needs none."""
    stub_missing("torchvision", "torchvision.transforms", "torchvision.datasets", "wandb")
    for name in [m for m in sys.modules if m.startswith("video_diffusion_pytorch")]:
        del sys.modules[name]
    (wip,) = published(str(Path("SSM-Meets-Video-Diffusion-Models") / folder),
                       "video_diffusion_pytorch.wip_video_diffusion_pytorch")
    return wip


SSM_FLAGS = ("--image_size 16 --channels 3 --num_frames 5 --base_channel_size 16 --attn_heads 2 "
             "--attn_dim_head 8 --timesteps 100")


@pytest.mark.parametrize("folder,flags", [
    ("", SSM_FLAGS + " --temporal_layer attn"),
    ("past_repo", SSM_FLAGS + " --temporal_layer attn --timeemb_linears 3"),
    ("past_repo", SSM_FLAGS + " --temporal_layer bi-s4d --s4d_version 16 --s4d_hidden_dim 8 --s4d_linear_dim 12"),
    ("past_repo", SSM_FLAGS + " --temporal_layer bi-s4d --s4d_version 8 --s4d_hidden_dim 8 --s4d_linear_dim 12"),
])
def test_ssm_matches_published(folder, flags):
    wip = import_ssm(folder)
    from fdm_engine.published import ssm

    args = ssm.read_flags(flags)
    names = ("s4d_hidden_dim", "s4d_linear_dim", "s4d_version") if folder else (
        "ssm_hidden_dim", "ssm_linear_dim", "ssm_version")
    hidden, linear, version = (args[n] for n in names)
    net = wip.Unet3D(dim=args["base_channel_size"], dim_mults=(1, 2, 4, 8), channels=args["channels"],
                     timeemb_linears=args["timeemb_linears"], attn_heads=args["attn_heads"],
                     attn_dim_head=args["attn_dim_head"], temporal_arch=args["temporal_layer"],
                     **{names[0]: hidden, names[1]: linear, names[2]: version})
    diffusion = wip.GaussianDiffusion(torch.nn.DataParallel(net), image_size=args["image_size"],
                                      channels=args["channels"], num_frames=args["num_frames"],
                                      timesteps=args["timesteps"])
    randomize(net)
    net.eval()
    ema = {k: v + 1 for k, v in diffusion.state_dict().items()}  # a distinct "ema" copy
    checkpoint = {"step": 7, "model": diffusion.state_dict(), "ema": ema, "opt": {}, "scaler": {}}
    ours, ema_state, _, extra = ssm.convert(checkpoint, "model-1.pt", flags)
    assert extra == {"step": 7} and set(ema_state) == set(ours.state_dict())
    ours.eval()

    B, Fr, C, H = 2, args["num_frames"], args["channels"], args["image_size"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, Fr, C, H, H, generator=g)
    t = torch.tensor([3, args["timesteps"] - 1])
    observed = torch.zeros(B, Fr, dtype=torch.bool)
    observed[0, :2] = True
    with torch.no_grad():
        theirs = net(x.transpose(1, 2), t).transpose(1, 2)
        mine = ours(x, torch.arange(Fr).repeat(B, 1) + 10, torch.where(observed, 0, t[:, None]).float(), observed)
    latent = ~observed
    assert report(f"ssm {folder or 'current'} [{flags}]", mine[latent], theirs[latent]) <= TOL


# ---- video_diffusion (swookey-thinky) ---------------------------------------------------------


def import_video_diffusion():
    """Its diffusion module from the local copy; the text-encoder / image / summary imports it makes
    at module level (transformers, torchvision, torchinfo) are stubbed: the VDM network needs none.
    Its config helpers import PyYAML, which must be installed."""
    pytest.importorskip("yaml", reason="the published video_diffusion code imports PyYAML")
    stub_missing("transformers", "torchvision", "torchvision.transforms", "torchvision.transforms.v2",
                 "torchvision.utils", "torchinfo")
    ddpm, utils = published("video_diffusion", "video_diffusion.ddpm", "video_diffusion.utils")
    return ddpm, utils


def test_video_diffusion_config_reader_agrees_with_pyyaml():
    import yaml

    from fdm_engine.published.yaml_subset import read_yaml

    folder = Path(ROOT) / "video_diffusion" / "configs"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    files = sorted(folder.rglob("*.yaml"))
    assert files
    for path in files:
        assert read_yaml(path) == yaml.load(path.read_text(), yaml.SafeLoader), path


@pytest.mark.parametrize("params", [
    {},  # its configs/moving_mnist/video_diffusion_models.yaml, shrunk
    {"resblock_updown": True, "resamp_with_conv": True, "use_scale_shift_norm": False, "mlp_layers": 1},
    {"is_learned_sigma": True, "num_resnet_blocks": [1, 2, 1]},
])
def test_video_diffusion_matches_published(params):
    from published_helpers import vd_config

    from fdm_engine.models import build_model
    from fdm_engine.published import video_diffusion

    ddpm_module, utils = import_video_diffusion()
    frames = 5
    config = vd_config(frames=frames, mults=(1, 2, 2), attention=(8, 4), blocks=1, num_scales=1024, **params)
    diffusion = ddpm_module.GaussianDiffusion_DDPM(utils.DotConfig(config))
    net = diffusion._score_network
    randomize(net)
    diffusion.eval()
    loaded = video_diffusion.translate({"step": 3, "model_state_dict": diffusion.state_dict(), "config": config},
                                       "diffusion-3.pt", config, "config")
    ours = build_model(loaded.model_name, loaded.model_config)
    ours.load_state_dict(loaded.state_dict, strict=True)
    ours.eval()

    B, C, H = 2, 1, 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, frames, C, H, H, generator=g)
    scheduler, steps = diffusion._noise_scheduler, diffusion._noise_scheduler.steps()
    for i in (0, 37, 500, steps - 1):  # its sampler's step index; our timestep is the same number
        t = torch.tensor([i, steps - 1 - i])
        context = {"logsnr_t": scheduler.logsnr((t + 1) / steps), "timestep": t / steps}
        with torch.no_grad():
            theirs = net(x.transpose(1, 2), context)
            theirs = (theirs[0] if isinstance(theirs, (tuple, list)) else theirs).transpose(1, 2)
            mine = ours(x, torch.arange(frames).repeat(B, 1) + 3, t[:, None].float().expand(B, frames),
                        torch.zeros(B, frames, dtype=torch.bool))
        assert report(f"video_diffusion {params} step {i}", mine, theirs) <= TOL


def test_video_diffusion_ancestral_step_is_our_ddpm_step():
    """One step of its AncestralSampler (no guidance) against our "ddpm" sampler on the converted
    schedule: same network, same noise; timestep i of ours is its step i."""
    from published_helpers import vd_config

    from fdm_engine.diffusion.schedule import NoiseSchedule
    from fdm_engine.models import build_model
    from fdm_engine.published import video_diffusion
    from fdm_engine.samplers import make_sampler

    ddpm_module, utils = import_video_diffusion()
    frames, n = 4, 1024
    config = vd_config(frames=frames, num_scales=n)
    diffusion = ddpm_module.GaussianDiffusion_DDPM(utils.DotConfig(config))
    randomize(diffusion._score_network, scale=0.05)
    diffusion.eval()
    loaded = video_diffusion.translate({"model_state_dict": diffusion.state_dict()}, "d.pt", config, "config")
    ours = build_model(loaded.model_name, loaded.model_config).eval()
    ours.load_state_dict(loaded.state_dict, strict=True)
    sampler = make_sampler("ddpm", NoiseSchedule(loaded.diffusion), steps=n, spacing="linspace", clip_denoised=True)
    assert sampler.timesteps.tolist() == list(range(n - 1, -1, -1))  # every step, as its sampler takes
    scheduler = diffusion._noise_scheduler
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, frames, 1, 16, 16, generator=g)
    for i in (n - 1, 600, 1, 0):
        t = torch.full((2,), i)
        context = {"timestep_idx": i, "timestep": t / n, "logsnr_s": scheduler.logsnr(t / n),
                   "logsnr_t": scheduler.logsnr((t + 1) / n)}
        with torch.no_grad():
            torch.manual_seed(7)
            theirs = diffusion._reverse_process_sampler.p_sample(x.transpose(1, 2), context=context,
                                                                 unconditional_context=None, diffusion_model=diffusion)
            torch.manual_seed(7)
            noise = torch.randn_like(x.transpose(1, 2)).transpose(1, 2)
            levels = torch.full((2, frames), float(i))
            pred = ours(x, torch.arange(frames).repeat(2, 1), levels, torch.zeros(2, frames, dtype=torch.bool))
            mine = sampler.step(pred, levels, levels - 1 if i else torch.full_like(levels, -1.0), x, noise)
        assert report(f"video_diffusion ancestral step {i}", mine, theirs.transpose(1, 2)) <= TOL
