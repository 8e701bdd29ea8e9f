"""The higher-order solvers (UniPC, DPM-Solver++(3M), DPM-Solver++(2M) SDE, Heun/EDM) against
closed forms, and per-frame noise levels: frames at different levels (and with different
histories) in one call each get their own update, in one vectorised call."""

import math

import pytest
import torch

from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
from fdm_engine.evaluation import sampler_job_map
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig
from fdm_engine.samplers import make_sampler, run_job
from fdm_engine.samplers.dpmpp import DPMSolverPP2MSDESampler

pytestmark = pytest.mark.usefixtures("one_thread")
SCHED = NoiseSchedule(DiffusionConfig(prediction="x0"))
C = 0.5  # data ~ N(0, C^2) per pixel


class GaussianDenoiser(torch.nn.Module):
    """The exact x0 predictor for data N(0, C^2) per pixel: E[x0 | x_t] = a C^2 / (a^2 C^2 + s^2) x_t."""

    def forward(self, x, frame_indices, noise_levels, observed, valid=None):
        a, s = SCHED.alpha_sigma(noise_levels.double())
        a, s = (c.reshape(c.shape + (1, 1, 1)).to(x.dtype) for c in (a, s))
        return a * C**2 / (a**2 * C**2 + s**2) * x


def ode_error(name: str, steps: int) -> float:
    """Relative error at t = 0 against the exact probability-flow ODE solution from t = 999:
    x_t / sqrt(C^2 abar_t + 1 - abar_t) is constant along it."""
    sampler = make_sampler(name, SCHED, steps, "logsnr")
    traj = sampler.trajectory()[:-1]  # stop at the last timestep (0): the ODE is solved to there
    x = torch.linspace(-2, 2, 5, dtype=torch.float64).reshape(1, 1, 1, 1, 5)
    none = torch.zeros(1, 1, dtype=torch.bool)
    out = run_job(GaussianDenoiser(), sampler, x, torch.zeros(1, 1, dtype=torch.long), none, x,
                  levels=traj[:, None, None])
    ab0, ab1 = SCHED.alpha_bar(traj[0]), SCHED.alpha_bar(traj[-1])
    exact = x * ((C**2 * ab1 + 1 - ab1) / (C**2 * ab0 + 1 - ab0)).sqrt()
    return float((out - exact).abs().max() / exact.abs().max())


# Global order measured on this problem: the first, first-order step of a multistep method, and
# the uneven integer-timestep steps near t = 0 taken at full order (no lower-order final steps,
# which per-frame levels rule out), limit the third-order methods to about 2.
@pytest.mark.parametrize("name,order", [("dpm++2m", 2), ("dpm++3m", 2), ("unipc-2", 2), ("unipc", 2), ("heun", 2),
                                        ("ddim", 1)])
def test_ode_solvers_converge_to_the_closed_form_at_their_order(name, order):
    e20, e40 = ode_error(name, 20), ode_error(name, 40)
    assert e40 < 0.1 and e20 / e40 > 2 ** (order - 0.3), (e20, e40, math.log2(e20 / e40))


def test_first_order_sde_step_is_ddpm_posterior():
    """DPM-Solver++(2M) SDE without its second-order term is exactly DDPM with the posterior
    (fixed-small) variance: same exact affine map, noise columns included."""
    class FirstOrder(DPMSolverPP2MSDESampler):
        order = 1

    oracle = GaussianProcessOracle(OracleConfig("ou", lengthscale=4), NoiseSchedule())
    cfg = make_sampler("ddpm-small", oracle.schedule, 12, "logsnr").config
    a = sampler_job_map(oracle, FirstOrder(oracle.schedule, cfg), (0, 2), (1, 3))
    b = sampler_job_map(oracle, make_sampler("ddpm-small", oracle.schedule, 12, "logsnr"), (0, 2), (1, 3))
    assert torch.allclose(a.gain, b.gain, atol=1e-12) and torch.allclose(a.noise, b.noise, atol=1e-12)


def test_heun_costs_two_evaluations_per_step_but_the_last():
    sampler = make_sampler("heun", SCHED, 11, "logsnr")
    assert len(sampler.timesteps) == 6 and sampler.nfe == 11
    traj = sampler.trajectory()
    assert traj[0] == traj.max() and torch.equal(traj[1:-1:2], traj[2:-1:2]), "each level after the first twice"


def _solo(name, levels, x, noises):
    """One frame alone on its own levels [n + 1]; noises[i] is its noise for its i-th move."""
    sampler = make_sampler(name, SCHED, 8, "logsnr")
    return run_job(GaussianDenoiser(), sampler, x, torch.zeros(1, 1, dtype=torch.long),
                   torch.zeros(1, 1, dtype=torch.bool), x, levels=levels[:, None, None],
                   step_noise=lambda i: noises[i])


@pytest.mark.parametrize("name", ["dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc", "unipc-2", "heun", "ddim", "ddpm"])
def test_frames_at_different_levels_each_follow_their_own_history(name):
    """Frame 0 runs the sampler's 8-step trajectory from the first call, then stays clean; frame 1
    waits 3 calls at the top level, then runs a 6-step karras trajectory (other levels, other
    step ratios); frame 2 is observed. In one call each latent frame must end exactly where it ends
    when run alone (the denoiser treats frames independently, so only the sampler couples them)."""
    own = make_sampler(name, SCHED, 8, "logsnr").trajectory()
    other = make_sampler(name, SCHED, 6, "karras").trajectory()
    wait = 3
    n = max(len(own), len(other) + wait)
    col0 = torch.cat([own, own[-1:].repeat(n - len(own))])
    col1 = torch.cat([other[:1].repeat(wait), other, other[-1:].repeat(n - wait - len(other))])
    levels = torch.stack([col0, col1, -torch.ones(n, dtype=torch.float64)], -1)[:, None, :]  # [n, 1, 3]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 1, 2, 2, generator=g, dtype=torch.float64)
    z = torch.randn(n - 1, 1, 3, 1, 2, 2, generator=g, dtype=torch.float64)
    observed = torch.tensor([[False, False, True]])
    joint = run_job(GaussianDenoiser(), make_sampler(name, SCHED, 8, "logsnr"), x,
                    torch.zeros(1, 3, dtype=torch.long), observed, x, levels=levels, step_noise=lambda i: z[i])
    alone0 = _solo(name, own, x[:, :1], [z[i][:, :1] for i in range(len(own) - 1)])
    alone1 = _solo(name, other, x[:, 1:2], [z[i + wait][:, 1:2] for i in range(len(other) - 1)])
    assert torch.allclose(joint[:, :1], alone0, rtol=1e-10, atol=1e-12)
    assert torch.allclose(joint[:, 1:2], alone1, rtol=1e-10, atol=1e-12)
    assert torch.equal(joint[:, 2], x[:, 2])
    # and the levels really differ within calls: the test is not one trajectory twice
    assert bool((levels[:, 0, 0] != levels[:, 0, 1]).sum() > n // 2)
