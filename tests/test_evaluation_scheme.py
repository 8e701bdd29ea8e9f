"""Exact scheme scores: the linear-Gaussian propagation, its KL, and a Monte-Carlo check through
the real executor."""

import math

import pytest
import torch

from fdm_engine.diffusion import NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.evaluation import (ExactConditional, gaussian_kl, kl_estimate, monte_carlo_scheme, propagate,
                                   score_scheme, static_schemes)
from fdm_engine.evaluation.gaussian import error_by_distance
from fdm_engine.evaluation.montecarlo import logdet_bias
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig
from fdm_engine.samplers import make_sampler
from sampling_schemes import plan

SCHED = NoiseSchedule()


pytestmark = pytest.mark.usefixtures("one_thread")


def oracle(kernel="periodic", **kw):
    return GaussianProcessOracle(OracleConfig(kernel=kernel, **kw), SCHED)


def test_gaussian_kl_closed_form_1d_and_mean():
    a, b, m = (torch.tensor(v, dtype=torch.float64) for v in ([[0.3]], [[0.5]], [0.2]))
    exact = 0.5 * (0.3 / 0.5 - 1 - math.log(0.3 / 0.5) + 0.2**2 / 0.5)
    assert gaussian_kl(m, a, b) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("n_obs", [0, 5])
def test_one_job_for_the_whole_video_is_exact(n_obs):
    T = 40
    s = score_scheme("autoreg", T, n_obs, max_frames=T, step_size=T - max(n_obs, 1), oracle=oracle())
    assert s.jobs == 1
    assert abs(s.kl) < 1e-8
    assert max(abs(v - 1) for v in s.variance_ratio) < 1e-10


@pytest.mark.parametrize("scheme,k,s", [("autoreg", 8, 4), ("autoreg", 8, 7), ("autoreg", 2, 1), ("long-range", 8, 4)])
def test_markov_kernel_with_the_newest_frame_observed_is_exact(scheme, k, s):
    """OU is Markov: a job seeing the newest done frame before its latent run loses nothing."""
    score = score_scheme(scheme, 120, 4, k, s, oracle=oracle("ou", lengthscale=6))
    assert abs(score.kl) < 1e-8


def test_periodic_kernel_autoreg_loses_and_hierarchy_loses_less():
    o = oracle()  # periodic, period 24 > what an autoreg job of K=20 sees
    auto = score_scheme("autoreg", 300, 36, 20, oracle=o)
    hier = score_scheme("hierarchy-2", 300, 36, 20, oracle=o)
    assert auto.kl > 1.0
    assert 0 < hier.kl < auto.kl
    assert auto.jobs == hier.jobs == 27  # docs/schemes.md's reference count


def test_propagation_equals_the_explicit_linear_map():
    """Build x = M w job by job (M explicit, w = given prior draw + each job's fresh noise) and
    compare M M^T and its log-determinant with the propagated joint."""
    o = oracle(lengthscale=3, period=7)
    p = plan("hierarchy-2", 30, 3, 6)
    sigma = o.covariance(torch.arange(30))
    exact = ExactConditional(o)
    m = torch.zeros(30, 30, dtype=torch.float64)
    m[:3, :3] = torch.linalg.cholesky(sigma[:3, :3])
    col = 3
    for job in p.jobs:
        jm = exact(job.observed, job.latent)
        lat = list(job.latent)
        m[lat] = jm.gain @ m[list(job.observed)]
        m[lat, col:col + len(lat)] = jm.noise
        col += len(lat)
    joint = propagate(p, sigma, exact)
    assert torch.allclose(joint.cov, m @ m.T, atol=1e-12)
    assert joint.logdet == pytest.approx(float(torch.logdet(m @ m.T)), abs=1e-8)
    assert gaussian_kl(joint.mean, joint.cov, sigma, joint.logdet) == pytest.approx(
        gaussian_kl(joint.mean, m @ m.T, sigma), abs=1e-8)


def test_per_frame_and_per_distance_errors():
    o = oracle()
    s = score_scheme("autoreg", 100, 10, 8, oracle=o)
    assert len(s.variance_ratio) == len(s.cov_error) == 100
    assert all(abs(v - 1) < 1e-10 for v in s.variance_ratio[:10])  # given frames are exact
    assert max(abs(e) for e in s.cov_abs_error) > 0.01  # long-range correlations are wrong
    sigma = o.covariance(torch.arange(50))
    signed, absolute = error_by_distance(sigma.clone(), sigma, 5)
    assert float(signed.abs().max()) == 0 == float(absolute.max())


def test_adaptive_schemes_have_no_exact_score():
    with pytest.raises(FdmError, match="monte-carlo"):
        score_scheme("adaptive-autoreg", 60, 4, 8, oracle=oracle())
    names = static_schemes()
    assert {"autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-4", "hierarchy-2-parallel"} <= set(names)
    assert not any(n.startswith("adaptive") for n in names)


def test_singular_truth_is_a_clear_error():
    with pytest.raises(FdmError, match="singular"):
        score_scheme("autoreg", 60, 4, 8, oracle=oracle(weight=1.0))  # pure cosine: rank 2


def test_kl_estimate_is_unbiased_with_a_calibrated_error_bar():
    """Samples of N(0, Sigma) itself: the plug-in KL is ~d(d+1)/(4n) too high; the corrected one ~0."""
    o = oracle(lengthscale=4, period=12)
    d, n = 30, 4000
    sigma = o.covariance(torch.arange(d))
    g = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(sigma)
    z = [kl_estimate((chol @ torch.randn(d, n, generator=g, dtype=torch.float64)).T, sigma) for _ in range(40)]
    assert z[0].bias == pytest.approx(d * (d + 1) / (4 * n), rel=0.05)
    assert -0.5 * logdet_bias(n, d) == pytest.approx(z[0].bias)
    scores = torch.tensor([e.kl / e.se for e in z])
    assert abs(float(scores.mean())) < 0.6 and 0.6 < float(scores.std()) < 1.5


@pytest.mark.parametrize("scheme", ["autoreg", "hierarchy-2"])
def test_monte_carlo_through_the_executor_matches_exact(scheme):
    """Every pixel of every video sampled by the real Executor is a draw of the joint; with the
    same sampler (dpm++2m, 10 steps: its own error is in both) the estimate matches the exact KL."""
    o = oracle(lengthscale=4, period=12, size=32)
    sampler = make_sampler("dpm++2m", SCHED, 10, "logsnr")
    exact = score_scheme(scheme, 40, 4, 8, oracle=o, sampler=sampler).kl
    ideal = score_scheme(scheme, 40, 4, 8, oracle=o).kl
    est = monte_carlo_scheme(scheme, 40, 4, 8, oracle=o, sampler=sampler, num_videos=8, seed=1)
    assert est.n == 8 * 32 * 32
    assert est.agrees(exact, sigmas=3), (est, exact)
    assert exact > ideal > 1  # the sampler's own error adds to the scheme's


def test_sampler_with_many_steps_approaches_the_ideal_scheme_score():
    o = oracle()
    ideal = score_scheme("hierarchy-2", 120, 12, 10, oracle=o).kl
    rough = score_scheme("hierarchy-2", 120, 12, 10, oracle=o, sampler=make_sampler("dpm++2m", SCHED, 10, "logsnr")).kl
    fine = score_scheme("hierarchy-2", 120, 12, 10, oracle=o, sampler=make_sampler("dpm++2m", SCHED, 100, "logsnr")).kl
    assert abs(fine - ideal) < abs(rough - ideal)
    assert abs(fine - ideal) < 0.02 * ideal


def test_monte_carlo_needs_enough_samples():
    with pytest.raises(FdmError, match="too few"):
        monte_carlo_scheme("autoreg", 100, 4, 8, oracle=oracle(size=4), sampler=make_sampler("ddim", SCHED, 5),
                           num_videos=2)
