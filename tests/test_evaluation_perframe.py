"""Exact scores of per-frame-level schemes and context noise (docs/perframe.md, docs/oracle.md):
propagation against one joint job, against the Monte-Carlo estimate through the real executor."""

from __future__ import annotations

import pytest

from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.evaluation.sampler_score import score_sampler
from fdm_engine.evaluation.scheme_score import monte_carlo_scheme, score_scheme
from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec
from fdm_engine.samplers import make_sampler
from sampling_schemes.levels import LevelOptions

SCHEDULE = NoiseSchedule(DiffusionConfig())
ORACLE = GaussianProcessOracle(parse_oracle_spec("oracle:periodic:size=8"), SCHEDULE)
PER_FRAME = ["df-pyramid", "df-trapezoid", "df-autoregressive", "fifo", "ar-step"]


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++2m"])
@pytest.mark.parametrize("scheme, options", [("df-pyramid", LevelOptions(uncertainty_scale=0.0)),
                                             ("ar-step", LevelOptions(block_size=3, ar_step=0))])
def test_synchronous_settings_are_the_joint_job(sampler, scheme, options):
    """K >= T and every frame at one level: the plan is one joint job, the same KL as the sampler's."""
    s = make_sampler(sampler, SCHEDULE, 8)
    joint = score_sampler(ORACLE, s, (), tuple(range(6))).kl
    assert score_scheme(scheme, 6, 0, 6, 5, oracle=ORACLE, sampler=s, options=options).kl == pytest.approx(joint,
                                                                                                           rel=1e-9)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++2m", "unipc"])
@pytest.mark.parametrize("scheme", PER_FRAME)
def test_whole_video_in_one_window_is_one_joint_denoising(scheme, sampler):
    """K >= T: the scheme is one joint denoising of the whole video on its staggered levels, its
    frames crossing job boundaries (fifo, ar-step) with their history: the exact KL is that of ONE
    sampler making every call (tests/perframe_reference.py), measured independently."""
    from perframe_reference import one_sampler_kl

    from sampling_schemes import plan

    s = make_sampler(sampler, SCHEDULE, 8)
    options = LevelOptions(steps=8, partitions=1)
    kl = score_scheme(scheme, 6, 0, 40, 20, oracle=ORACLE, sampler=s, options=options).kl
    assert kl == pytest.approx(one_sampler_kl(plan(scheme, 6, 0, 40, 20, options), ORACLE, s), rel=1e-8)


@pytest.mark.parametrize("scheme", PER_FRAME)
def test_whole_video_in_one_window_is_near_exact_at_many_steps(scheme):
    """... and, the staggered levels being a path of the per-frame noising process, ~0 at many
    steps: below the synchronous joint job's KL at 8 steps by far (a frame restarting its history
    at every job, as fifo's one-call jobs did, stayed at DDIM's 0.027 nats here)."""
    s = make_sampler("dpm++2m", SCHEDULE, 32)
    kl = score_scheme(scheme, 6, 0, 40, 20, oracle=ORACLE, sampler=s, options=LevelOptions(partitions=1)).kl
    assert 0 <= kl < 1e-4


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++2m", "unipc", "dpm++2m-sde"])
@pytest.mark.parametrize("scheme, options", [("df-pyramid", LevelOptions(uncertainty_scale=1.5)),
                                             ("df-trapezoid", LevelOptions()),
                                             ("df-autoregressive", LevelOptions()),
                                             ("fifo", LevelOptions(partitions=2, lookahead=True)),
                                             ("ar-step", LevelOptions(block_size=2, ar_step=2))])
def test_exact_agrees_with_monte_carlo(sampler, scheme, options):
    s = make_sampler(sampler, SCHEDULE, 6)
    exact = score_scheme(scheme, 12, 3, 6, 3, oracle=ORACLE, sampler=s, options=options).kl
    mc = monte_carlo_scheme(scheme, 12, 3, 6, 3, oracle=ORACLE, sampler=s, num_videos=24, seed=1, options=options)
    assert mc.agrees(exact), (exact, mc)


@pytest.mark.parametrize("scheme", ["autoreg", "df-pyramid"])
def test_context_noise_exact_agrees_with_monte_carlo(scheme):
    s = make_sampler("ddpm", SCHEDULE, 6)
    exact = score_scheme(scheme, 12, 3, 6, 3, oracle=ORACLE, sampler=s, context_noise=80).kl
    clean = score_scheme(scheme, 12, 3, 6, 3, oracle=ORACLE, sampler=s).kl
    mc = monte_carlo_scheme(scheme, 12, 3, 6, 3, oracle=ORACLE, sampler=s, num_videos=24, seed=2, context_noise=80)
    assert mc.agrees(exact), (exact, mc)
    assert exact != pytest.approx(clean, rel=1e-3)


def test_exact_context_conditional_is_the_sampler_limit():
    """The ideal job given noised observations vs a fine sampler seeing the same."""
    fine = make_sampler("dpm++2m", SCHEDULE, 100)
    ideal = score_scheme("autoreg", 12, 3, 6, 3, oracle=ORACLE, context_noise=200).kl
    assert score_scheme("autoreg", 12, 3, 6, 3, oracle=ORACLE, sampler=fine, context_noise=200).kl == pytest.approx(
        ideal, abs=0.02)
    assert ideal > score_scheme("autoreg", 12, 3, 6, 3, oracle=ORACLE).kl  # noised context loses information


def test_per_frame_needs_a_sampler():
    with pytest.raises(FdmError, match="--sampler"):
        score_scheme("fifo", 12, 3, 6, 3, oracle=ORACLE)
