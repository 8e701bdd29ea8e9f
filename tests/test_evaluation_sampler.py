"""Exact sampler scores: the affine map measured through the real sampler, its KL, and a
Monte-Carlo check through run_job."""

import pytest
import torch

from fdm_engine.diffusion import NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.evaluation import ExactConditional, monte_carlo_sampler, sampler_job_map, score_sampler, sweep
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig
from fdm_engine.samplers import SAMPLERS, make_sampler
from fdm_engine.samplers.ddim import DDIMSampler

SCHED = NoiseSchedule()
ORACLE = GaussianProcessOracle(OracleConfig("periodic", lengthscale=4, period=12, weight=0.8), SCHED)
JOB = ((0, 3, 6), (1, 4, 9))  # interleaved observed / latent frames, as hierarchy jobs have


pytestmark = pytest.mark.usefixtures("one_thread")


def kl(name, steps, spacing="linspace", eta=0.0):
    return score_sampler(ORACLE, make_sampler(name, SCHED, steps, spacing, eta), *JOB).kl


# The multistep SDE is unstable on linspace's uneven steps (its last steps are far longer than the
# previous ones: measured KL 0.20 at 10 steps, 0.36 at 50): it is scored on logsnr, as are the other
# higher-order solvers.
FIRST = ("ddpm", "ddpm-small", "ddim", "dpm++2m")


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_kl_falls_towards_zero_as_steps_grow(name):
    # Higher orders reach the floor of the last move (to the x0 estimate at t = 0) by ~50 steps.
    spacing, steps = ("linspace", (10, 50, 200)) if name in FIRST else ("logsnr", (5, 15, 50))
    k10, k50, k200 = (kl(name, n, spacing) for n in steps)
    assert k10 > k50 > k200 > 0
    assert k200 < 0.05 * k10


def test_ddim_with_eta_is_scored_too():
    assert kl("ddim", 10, eta=1.0) > kl("ddim", 50, eta=1.0) > kl("ddim", 200, eta=1.0)


def test_map_of_a_fine_sampler_is_the_exact_conditional():
    m = sampler_job_map(ORACLE, make_sampler("dpm++2m", SCHED, 100, "logsnr"), *JOB)
    exact = ExactConditional(ORACLE)(*JOB)
    # The last move ends at the denoiser's mean at t = 0 (alpha-bar 0.9999), not at a clean
    # sample: a floor of ~1.6e-3 in the gain however many steps are taken (measured).
    assert torch.allclose(m.gain, exact.gain, atol=3e-3)
    assert torch.allclose(m.covariance, exact.covariance, atol=2e-3 * float(exact.covariance.diag().max()))
    assert float(m.offset.abs().max()) == 0.0  # the oracle's samplers are linear: no offset


def test_stochastic_map_has_a_noise_column_per_step_and_frame():
    sampler = make_sampler("ddpm", SCHED, 20, "linspace")
    m = sampler_job_map(ORACLE, sampler, *JOB)
    assert m.gain.shape == (3, 3) and m.noise.shape == (3, 3 + 20 * 3)


def test_an_affine_offset_is_measured_not_assumed():
    class Shifted(DDIMSampler):  # a (wrong) sampler that adds a constant at every step
        def update(self, x0, x_t, t, t_next, noise):
            return super().update(x0, x_t, t, t_next, noise) + 0.01

    plain = sampler_job_map(ORACLE, make_sampler("ddim", SCHED, 10), *JOB)
    shifted = sampler_job_map(ORACLE, Shifted(SCHED, make_sampler("ddim", SCHED, 10).config), *JOB)
    assert torch.allclose(shifted.gain, plain.gain) and torch.allclose(shifted.noise, plain.noise)
    assert float(shifted.offset.abs().min()) > 0.005
    shifted_kl = score_sampler(ORACLE, Shifted(SCHED, make_sampler("ddim", SCHED, 10).config), *JOB).kl
    assert shifted_kl > kl("ddim", 10, "logsnr")  # the mean error enters the KL


@pytest.mark.parametrize("name,steps,spacing,eta", [
    ("ddim", 10, "linspace", 0.0), ("ddpm", 10, "linspace", 0.0), ("dpm++2m", 10, "linspace", 0.0),
    ("ddim", 20, "logsnr", 0.5), ("dpm++3m", 10, "logsnr", 0.0), ("dpm++2m-sde", 10, "logsnr", 0.0),
    ("unipc", 10, "logsnr", 0.0), ("unipc-2", 10, "logsnr", 0.0), ("heun", 10, "karras", 0.0),
])
def test_monte_carlo_through_run_job_matches_exact(name, steps, spacing, eta):
    sampler = make_sampler(name, SCHED, steps, spacing, eta)
    exact = score_sampler(ORACLE, sampler, *JOB).kl
    est = monte_carlo_sampler(ORACLE, sampler, *JOB, num_pixels=8192, seed=3)
    assert est.agrees(exact, sigmas=3), (est, exact)


def test_reproduces_the_prototype_variance_ratios_of_spec_8():
    """docs/oracle.md (data variance 0.09, one unconditional frame): DDPM 1000 -> 1.006; DDIM 50 -> 0.84
    (linspace), 0.90 (logsnr); DPM-Solver++(2M) 25 -> 1.57 (linspace), 1.02 (logsnr)."""
    o = GaussianProcessOracle(OracleConfig("periodic", scale=0.3), SCHED)
    cases = [("ddim", 50, "linspace", 0.84), ("ddim", 50, "logsnr", 0.90), ("dpm++2m", 25, "linspace", 1.57),
             ("dpm++2m", 25, "logsnr", 1.02), ("ddpm", 1000, "linspace", 1.006)]
    for name, steps, spacing, ratio in cases:
        r = score_sampler(o, make_sampler(name, SCHED, steps, spacing), (), (0,))
        assert r.variance_ratio == pytest.approx(ratio, abs=0.006 if steps < 1000 else 0.0006), (name, spacing)


def test_default_job_and_sweep():
    scores = sweep(ORACLE, SCHED, ["dpm++2m"], ["logsnr", "linspace"], [5, 20])
    assert [(s.spacing, s.steps) for s in scores] == [("logsnr", 5), ("logsnr", 20), ("linspace", 5), ("linspace", 20)]
    assert scores[0].observed == tuple(range(10)) and scores[0].latent == tuple(range(10, 20))
    assert scores[1].kl < scores[0].kl and scores[1].kl < scores[3].kl  # log-SNR spacing wins at few steps
    assert all(isinstance(v, (int, float, str, list)) for v in scores[0].to_dict().values())


@pytest.mark.parametrize("observed,latent", [((0, 1), (1, 2)), ((), ()), ((-1,), (2,))])
def test_bad_jobs_are_user_errors(observed, latent):
    with pytest.raises(FdmError):
        score_sampler(ORACLE, make_sampler("ddim", SCHED, 5), observed, latent)
