"""History guidance on a chain that feeds on its own output (df-autoregressive: one frame at a time,
each seeing the frames just made as history): on the exact oracle the guided prediction overshoots
the conditional mean, so each frame inherits more than its share of the previous frames' spread
and the variance grows geometrically along the video. That is the sampler's real behaviour (Monte
Carlo through the executor sees the same variances), not an artefact of the exact score; the exact
KL stays finite where the covariance itself is no longer factorisable in float64
(fdm_engine/evaluation/levels_map.py carries its square root)."""

from __future__ import annotations

import math

import pytest
import torch

from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
from fdm_engine.evaluation.gaussian import logdet_psd
from fdm_engine.evaluation.levels_map import propagate_levels
from fdm_engine.evaluation.montecarlo import pixel_series
from fdm_engine.evaluation.scheme_score import level_options, score_scheme, static_plan
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.history_guidance import HistoryGuidance
from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec
from fdm_engine.samplers import make_sampler
from sampling_schemes import job_source

SCHED = NoiseSchedule(DiffusionConfig())
ORACLE = GaussianProcessOracle(parse_oracle_spec("oracle:periodic:size=8"), SCHED)
SAMPLER = make_sampler("ddim", SCHED, 6, "logsnr")
GUIDED = HistoryGuidance(ORACLE, 1.0, "all")
N_OBS, K, S = 4, 6, 3
pytestmark = pytest.mark.usefixtures("one_thread")


def exact_joint(length: int, model):
    plan = static_plan("df-autoregressive", length, N_OBS, K, S, level_options(SAMPLER, None))
    sigma = ORACLE.covariance(torch.arange(length))
    return propagate_levels(plan, sigma, model, SAMPLER), sigma


def test_the_guided_chain_variance_grows_as_monte_carlo_sees():
    length, videos = 20, 24
    joint, sigma = exact_joint(length, GUIDED)
    ratio = torch.diagonal(joint.cov) / torch.diagonal(sigma)
    plain = exact_joint(length, ORACLE)[0]
    assert (torch.diagonal(plain.cov) / torch.diagonal(sigma))[N_OBS:].max() < 1.5  # unguided: no growth
    assert ratio[-1] > 30 and bool((ratio[-6:].diff() > 0).all())  # guided: grows frame after frame
    g = torch.Generator().manual_seed(3)
    state = SamplingState.start(ORACLE.sample_prior(videos, N_OBS, generator=g), length)
    source = job_source("df-autoregressive", length, N_OBS, K, S, options=level_options(SAMPLER, None))
    Executor(GUIDED, SAMPLER, batch_size=8, seed=3).run(source, state)
    x = pixel_series(state.buffer).double()  # [n, T]: independent samples of one pixel's series
    n = x.shape[0]
    var = x.var(dim=0)
    se = torch.diagonal(joint.cov) * math.sqrt(2 / (n - 1))  # of a Gaussian sample variance
    for f in (length - 7, length - 4, length - 1):
        assert abs(var[f] - joint.cov[f, f]) < 4 * se[f], (f, float(var[f]), float(joint.cov[f, f]))


def test_an_exploding_chain_keeps_a_finite_exact_kl():
    """At T = 100 the last frame's variance is ~1e15 times the truth's: the covariance's own
    Cholesky fails (the old log det was -inf, KL = inf), its square root still gives log det. The
    KL is at least that of any one frame's marginal (data processing)."""
    length = 100
    joint, sigma = exact_joint(length, GUIDED)
    assert logdet_psd((joint.cov + joint.cov.T) / 2) == float("-inf")
    assert math.isfinite(joint.logdet)
    kl = score_scheme("df-autoregressive", length, N_OBS, K, S, oracle=ORACLE, sampler=SAMPLER,
                      denoiser=GUIDED).kl
    r = joint.cov[-1, -1] / sigma[-1, -1]
    marginal = 0.5 * float(r - 1 - torch.log(r) + joint.mean[-1] ** 2 / sigma[-1, -1])
    assert math.isfinite(kl) and kl >= marginal > 1e12


def test_square_root_log_det_is_the_covariance_log_det_where_both_exist():
    joint, _ = exact_joint(40, GUIDED)
    assert joint.logdet == pytest.approx(logdet_psd((joint.cov + joint.cov.T) / 2), rel=1e-6)


def test_eval_scheme_says_when_the_variance_grows(capsys):
    from cli_helpers import run_fdm

    args = ["eval", "scheme", "df-autoregressive", "--length", "20", "--n-obs", str(N_OBS), "--max-frames", str(K),
            "--step-size", str(S), "--sampler", "ddim", "--steps", "6", "--spacing", "logsnr",
            "--oracle", "oracle:periodic:size=8"]
    code, out, err = run_fdm(capsys, *args, "--history-guidance", "1")
    assert code == 0, err
    assert "note: the variance grows along the video (up to 338 x" in out
    code, out, _ = run_fdm(capsys, *args)
    assert code == 0 and "note:" not in out
