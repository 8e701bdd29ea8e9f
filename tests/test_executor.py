"""The executor with the exact oracle: batching, determinism, resumption, and the statistics of
whole sampled videos."""

import pytest
import torch

from fdm_engine.diffusion import NoiseSchedule
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig
from fdm_engine.samplers import make_sampler
from sampling_schemes import AdaptivePlanner, plan

SCHED = NoiseSchedule()


def oracle(kernel="ou", size=8, **kw):
    return GaussianProcessOracle(OracleConfig(kernel, size=size, **kw), SCHED)


def run(model, scheme, T, n_obs, K, S, videos=2, batch=1, seed=0, steps=20, state=None, on_round=None):
    ex = Executor(model, make_sampler("dpm++2m", SCHED, steps, "logsnr"), batch_size=batch, seed=seed)
    if state is None:
        given = model.sample_prior(videos, max(n_obs, 1), torch.Generator().manual_seed(99))[:, :n_obs]
        state = SamplingState.start(given, T)
    return ex.run(plan(scheme, T, n_obs, K, S), state, on_round=on_round)


@pytest.mark.parametrize("scheme", ["autoreg", "hierarchy-2", "hierarchy-2-parallel"])
def test_same_seed_same_video_whatever_the_batch_size(scheme):
    m = oracle()
    ref = run(m, scheme, 40, 4, 8, 4, videos=3, batch=1)
    for batch in (2, 7):
        st = run(m, scheme, 40, 4, 8, 4, videos=3, batch=batch)
        assert torch.allclose(st.buffer, ref.buffer, atol=1e-5), batch
        assert st.nfe == ref.nfe and st.calls < ref.calls
    assert bool(ref.done.all())
    other = run(m, scheme, 40, 4, 8, 4, videos=3, batch=1, seed=1)
    assert not torch.allclose(other.buffer[:, 4:], ref.buffer[:, 4:])


def test_given_frames_are_kept_and_counts_are_right():
    m = oracle()
    st = run(m, "autoreg", 30, 5, 6, 3, videos=2, steps=10)
    given = m.sample_prior(2, 5, torch.Generator().manual_seed(99))
    assert torch.equal(st.buffer[:, :5], given)
    n_jobs = len(plan("autoreg", 30, 5, 6, 3))
    assert st.nfe == n_jobs * 2 * 10 and st.rounds == n_jobs


def test_parallel_hierarchy_needs_few_rounds():
    st = run(oracle(), "hierarchy-2-parallel", 300, 36, 20, 10, videos=1, steps=2, batch=64)
    seq = run(oracle(), "hierarchy-2", 300, 36, 20, 10, videos=1, steps=2, batch=64)
    assert bool(st.done.all()) and st.rounds * 5 <= seq.rounds


def test_resume_after_interruption_gives_identical_frames():
    m = oracle()
    ref = run(m, "hierarchy-2", 60, 6, 10, 5, videos=2)
    saved = {}

    class Killed(Exception):
        pass

    def kill_after_three(st):
        if st.rounds == 3:
            saved["state"] = SamplingState.from_dict({k: (v.clone() if torch.is_tensor(v) else v)
                                                     for k, v in st.to_dict().items()})
            raise Killed

    with pytest.raises(Killed):
        run(m, "hierarchy-2", 60, 6, 10, 5, videos=2, on_round=kill_after_three)
    resumed = run(m, "hierarchy-2", 60, 6, 10, 5, state=saved["state"])
    assert torch.equal(resumed.buffer, ref.buffer)


def pixel_covariance(buffer):
    x = buffer.double().flatten(2).transpose(1, 2).reshape(-1, buffer.shape[1])  # [pixels, T]
    return x.T @ x / len(x)


def test_autoreg_on_a_markov_kernel_reproduces_the_gp():
    """OU is Markov: conditioning on the newest frame is enough, so autoreg is exact."""
    m = oracle("ou", size=16, lengthscale=6)
    T = 40
    st = run(m, "autoreg", T, 2, 6, 4, videos=16, batch=16)
    emp, true = pixel_covariance(st.buffer), m.covariance(torch.arange(T))
    assert (emp - true).abs().max() < 0.02  # 4096 draws per entry, variance 0.25: 4 sigma ~ 0.016


def test_hierarchy_keeps_long_range_correlation_that_autoreg_loses():
    m = oracle("periodic", size=16, lengthscale=2, period=24, weight=0.8)
    T = 96
    true = m.covariance(torch.arange(T))
    err = {}
    lag = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    far = lag.abs() >= 48  # two periods and more: beyond what autoreg's window (20 frames) sees
    for scheme in ("autoreg", "hierarchy-2"):
        st = run(m, scheme, T, 12, 20, 10, videos=8, batch=16, steps=15)
        emp = pixel_covariance(st.buffer)
        err[scheme] = float((emp - true)[far].abs().mean())
    assert err["hierarchy-2"] < 0.5 * err["autoreg"], err


def test_adaptive_scheme_runs_and_resumes_identically():
    m = oracle()
    T, n_obs, K = 40, 4, 8

    def fresh():
        given = m.sample_prior(2, n_obs, torch.Generator().manual_seed(5))
        return SamplingState.start(given, T)

    ex = Executor(m, make_sampler("ddim", SCHED, 10, "logsnr"), batch_size=2, seed=0)
    ref = ex.run_adaptive(AdaptivePlanner("adaptive-autoreg", T, n_obs, K, batch_size=2), fresh())
    assert bool(ref.done.all())
    st = fresh()
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def kill(_):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed

    with pytest.raises(Killed):
        ex.run_adaptive(AdaptivePlanner("adaptive-autoreg", T, n_obs, K, batch_size=2), st, on_round=kill)
    ex.run_adaptive(AdaptivePlanner("adaptive-autoreg", T, n_obs, K, batch_size=2), st)
    assert torch.equal(st.buffer, ref.buffer)


@pytest.mark.parametrize("scheme", ["autoreg", "hierarchy-2", "hierarchy-2-parallel"])
def test_upcoming_jobs_are_the_jobs_ready_next(scheme):
    from sampling_schemes.source import StaticSource

    jobs = StaticSource(plan(scheme, 60, 6, 10, 5)).video()
    ready, rounds = jobs.ready(), 0
    while ready:
        upcoming = jobs.upcoming([o for o, _ in ready])
        for order, _ in ready:
            jobs.finish(order)
        ready, rounds = jobs.ready(), rounds + 1
        assert upcoming == ready, rounds
    assert jobs.complete and rounds > 2


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddpm"])
def test_noise_drawn_ahead_equals_noise_drawn_inline(sampler, monkeypatch):
    """The executor draws the next round's noise while a round runs; the frames are bit-identical
    to drawing it when the jobs run (ddpm: the step noise continues the same generators)."""
    m = oracle()
    given = m.sample_prior(3, 4, torch.Generator().manual_seed(5))

    def frames():
        ex = Executor(m, make_sampler(sampler, SCHED, 3, "logsnr"), batch_size=2, seed=4)
        return ex.run(plan("hierarchy-2", 40, 4, 8, 4), SamplingState.start(given, 40)).buffer

    ahead = frames()
    monkeypatch.setattr(Executor, "upcoming", staticmethod(lambda tasks: []))
    assert torch.equal(frames(), ahead)
