"""Sampling as the published tools did: improved-diffusion's timestep respacing, reproduced
exactly, and clip_denoised (x0 predictions clamped to the data range at every step)."""

import json

import numpy as np
import pytest
import torch

from fdm_engine.checkpoint import LoadedDenoiser
from fdm_engine.denoisers import default_clip_denoised, load_denoiser
from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule, timesteps_for
from fdm_engine.samplers import SAMPLERS, make_sampler
from tests.cli_helpers import run_fdm

SCHED = NoiseSchedule()


def respaced(num_timesteps: int, section_counts: list[int]) -> set[int]:
    """improved-diffusion's space_timesteps, written here from its description: split the N steps
    into equal sections (the first N % len ones one longer); in each, take `count` steps at a
    fractional stride (size-1)/(count-1) from the section start, rounding a running float sum."""
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


def test_linspace_250_is_timestep_respacing_250():
    ours = timesteps_for(SCHED, 250, "linspace")
    assert torch.all(ours[:-1] > ours[1:]), "decreasing"
    assert set(ours.tolist()) == respaced(1000, [250])
    assert ours[0] == 999 and ours[-1] == 0


@pytest.mark.parametrize("num_steps", [1000, 4000, 100])
def test_linspace_is_the_published_respacing_for_every_count(num_steps):
    """Including the counts where the running sum lands on a tie (21, 23, 27, ... of 1000), where
    round(linspace(N-1, 0, n)) picks other timesteps."""
    sched = NoiseSchedule(DiffusionConfig(num_steps=num_steps))
    bad = [n for n in range(2, num_steps + 1)
           if set(timesteps_for(sched, n, "linspace").tolist()) != respaced(num_steps, [n])]
    assert not bad, bad[:10]
    assert set(np.round(np.linspace(999, 0, 21)).astype(int).tolist()) != respaced(1000, [21])


def test_ddpm_on_the_respaced_chain_uses_the_respaced_betas():
    """SpacedDiffusion's betas 1 - abar_t / abar_prev are what DDPM steps between visited timesteps:
    one step's mean and variance equal the posterior of the respaced chain."""
    ts = timesteps_for(SCHED, 250, "linspace")
    chain = SCHED.respace(ts.tolist())
    k = 100  # a respaced index; the original timestep is ts_asc[k]
    t, t_prev = float(chain.timestep_map[k]), float(chain.timestep_map[k - 1])
    b, ab, ab_prev = chain.betas[k], chain.alphas_cumprod[k], chain.alphas_cumprod[k - 1]
    x_t, x0 = torch.randn(1, 1, 1, 2, 2, dtype=torch.float64), torch.randn(1, 1, 1, 2, 2, dtype=torch.float64)
    coef0, coeft = b * ab_prev.sqrt() / (1 - ab), (1 - ab_prev) * (1 - b).sqrt() / (1 - ab)
    sampler = make_sampler("ddpm", SCHED, 250, "linspace")
    tt, tn = torch.tensor([[t]]), torch.tensor([[t_prev]])
    mean = sampler.update(x0, x_t, tt, tn, torch.zeros_like(x_t))
    assert torch.allclose(mean, coef0 * x0 + coeft * x_t, rtol=1e-12)
    spread = sampler.update(x0, x_t, tt, tn, torch.ones_like(x_t)) - mean
    assert torch.allclose(spread, b.sqrt() * torch.ones_like(x_t), rtol=1e-12)


class ConstantX0(torch.nn.Module):
    """An x0-predicting model whose prediction is `value` everywhere."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_clip_denoised_clamps_x0_for_every_sampler(name):
    """With x0 predicted as 3 (out of range), a clipping sampler moves as if it had been 1."""
    sched = NoiseSchedule(DiffusionConfig(prediction="x0"))
    x = torch.randn(1, 2, 1, 2, 2, dtype=torch.float64)
    t, t_next = torch.tensor([[500.0, 300.0]]), torch.tensor([[400.0, -1.0]])
    noise = torch.randn_like(x)
    clipped = make_sampler(name, sched, 10, clip_denoised=True).step(torch.full_like(x, 3.0), t, t_next, x, noise)
    plain = make_sampler(name, sched, 10).step(torch.full_like(x, 1.0), t, t_next, x, noise)
    assert torch.allclose(clipped, plain)
    assert torch.allclose(clipped[0, 1], torch.ones_like(x[0, 1])), "the move to clean ends at the clamped x0"


def test_clip_denoised_default_follows_the_model():
    assert default_clip_denoised(load_denoiser("oracle:ou")) is False
    trained = LoadedDenoiser(model=ConstantX0(0.0), diffusion=DiffusionConfig(), model_name="fdm", extra={},
                             path=None, used_ema=True)
    assert default_clip_denoised(trained) is True


@pytest.mark.parametrize("flag,bounded", [("--clip-denoised", True), (None, False)])
def test_fdm_sample_clip_flag(tmp_path, capsys, one_thread, flag, bounded):
    """A wide oracle (scale 2) leaves [-1, 1] unless --clip-denoised; the oracle's default is off."""
    out = tmp_path / "run"
    args = ["sample", "oracle:ou:scale=2,size=4", "--scheme", "autoreg", "--n-obs", "2", "--length", "6",
            "--max-frames", "4", "--steps", "4", "--format", "npz", "--save-raw", "--quiet", "--out", out]
    code, _, err = run_fdm(capsys, *args, *([flag] if flag else []))
    assert code == 0, err
    raw = np.load(out / "video_0000.npz")["raw"][2:]
    assert (np.abs(raw).max() <= 1.0) == bounded
    assert json.loads((out / "plan.json").read_text())["config"]["clip_denoised"] == (True if flag else None)
