"""Diffusion core: schedules, noising, prediction conversions, loss masking, spacings."""

import math

import numpy as np
import pytest
import torch

from fdm_engine.diffusion import (DiffusionConfig, NoiseSchedule, convert, cosine_betas, diffusion_loss,
                                  linear_betas, masked_mse, target, timesteps_for, to_x0)
from fdm_engine.errors import FdmError


def test_linear_schedule_matches_ho_et_al():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000
    # Any length keeps the total amount of noise (improved-DDPM rescaling by 1000/n).
    assert float(linear_betas(100).sum()) == pytest.approx(float(b.sum()), rel=1e-12)


@pytest.mark.parametrize("n", [10, 1000, 4000])
def test_cosine_schedule_follows_its_formula(n):
    ab = torch.cumprod(1 - cosine_betas(n), 0)
    s = 0.008
    f = lambda t: math.cos((t / n + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for i in [0, n // 2, n - 2]:
        assert ab[i] == pytest.approx(f(i + 1) / f(0), rel=1e-9)


def test_alpha_bar_interpolates_and_is_one_when_clean():
    s = NoiseSchedule()
    assert s.alpha_bar(torch.tensor(-1.0)) == 1
    assert torch.allclose(s.alpha_bar(torch.arange(1000.0)), s.alphas_cumprod)
    mid = s.log_snr(torch.tensor(10.5))
    assert s.log_snrs[11] < mid < s.log_snrs[10]


def test_q_sample_has_the_right_moments():
    s = NoiseSchedule(DiffusionConfig(schedule="cosine"))
    x0 = torch.full((4000, 1, 1, 1, 1), 0.7)
    t = torch.full((4000, 1), 300.0)
    xt = s.q_sample(x0, t, torch.randn_like(x0))
    a, sig = s.alpha_sigma(torch.tensor(300.0))
    assert xt.mean() == pytest.approx(float(a) * 0.7, abs=4 * float(sig) / 60)
    assert xt.std() == pytest.approx(float(sig), rel=0.05)


@pytest.mark.parametrize("src", ["eps", "x0", "v"])
@pytest.mark.parametrize("dst", ["eps", "x0", "v"])
def test_prediction_conversions_round_trip(src, dst):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    ab = torch.rand(3, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    a, s = ab.sqrt(), (1 - ab).sqrt()
    xt = a * x0 + s * eps
    p_src, p_dst = target(src, x0, eps, a, s), target(dst, x0, eps, a, s)
    assert torch.allclose(convert(p_src, src, dst, xt, a, s), p_dst, atol=1e-10)
    assert torch.allclose(convert(convert(p_src, src, dst, xt, a, s), dst, src, xt, a, s), p_src, atol=1e-10)
    assert torch.allclose(to_x0(p_src, src, xt, a, s), x0, atol=1e-10)


def test_masked_mse_averages_latent_frames_only():
    pred = torch.zeros(2, 4, 1, 2, 2)
    tgt = torch.zeros(2, 4, 1, 2, 2)
    tgt[0, 1] = 2.0  # latent frame, squared error 4
    tgt[0, 0] = 100.0  # observed: ignored
    tgt[1, 3] = 100.0  # padding: ignored
    latent = torch.tensor([[False, True, True, True], [True, True, False, False]])
    # 5 latent frames, one of them with error 4 -> 0.8 (dividing by K = 4 slots would give 0.5).
    assert masked_mse(pred, tgt, latent) == pytest.approx(0.8)


class _Probe(torch.nn.Module):
    """Predicts the true noise on latent frames plus `junk` everywhere else."""

    def __init__(self, noise, junk):
        super().__init__()
        self.noise, self.junk = noise, junk

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        latent = (~observed & valid)[..., None, None, None]
        return torch.where(latent, self.noise + 0.1, self.noise + self.junk)


@pytest.mark.parametrize("junk", [0.0, 1e3])
def test_diffusion_loss_ignores_observed_and_padding_frames(junk):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 5, 1, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    observed = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    loss = diffusion_loss(_Probe(noise, junk), NoiseSchedule(), x0, torch.arange(5).expand(2, 5),
                          observed, valid, t=torch.tensor([10, 500]), noise=noise)
    assert loss == pytest.approx(0.01, rel=1e-5)


def test_respacing_keeps_alpha_bar_at_kept_steps():
    s = NoiseSchedule()
    ts = timesteps_for(s, 50, "linspace")
    r = s.respace(ts)
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[r.timestep_map])
    assert r.num_steps == len(set(ts.tolist()))


def test_spacings_follow_their_definitions():
    s = NoiseSchedule()
    n = 25
    assert timesteps_for(s, n, "linspace").tolist() == np.round(np.linspace(999, 0, n)).astype(int).tolist()
    assert timesteps_for(s, n, "trailing").tolist() == (np.round(np.arange(1000, 0, -1000 / n)) - 1).astype(int).tolist()
    lam = s.log_snrs.numpy()
    ts = timesteps_for(s, n, "logsnr").numpy()
    gaps = np.diff(lam[ts])
    assert ts[0] == 999 and ts[-1] == 0 and np.all(gaps > 0)
    assert gaps.std() / gaps.mean() < 0.25  # near-uniform steps in log-SNR
    k = timesteps_for(s, n, "karras").numpy()
    assert k[0] == 999 and k[-1] == 0 and np.all(np.diff(k) < 0)
    for spacing in ("linspace", "trailing", "logsnr", "karras"):
        assert len(timesteps_for(s, 1000, spacing)) <= 1000
    with pytest.raises(FdmError, match="--steps"):
        timesteps_for(s, 0, "logsnr")
    with pytest.raises(FdmError, match="unknown timestep spacing"):
        timesteps_for(s, 10, "bogus")


def test_config_round_trips_through_json():
    c = DiffusionConfig(schedule="cosine", num_steps=500, prediction="v")
    assert DiffusionConfig.from_json(c.to_json()) == c
    with pytest.raises(FdmError):
        DiffusionConfig(prediction="score")
