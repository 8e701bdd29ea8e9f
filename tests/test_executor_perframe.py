"""The executor with per-frame-level jobs (docs/perframe.md): frames carried between jobs, batching
invariance, NFE, context noise, and the sampler refusals."""

from __future__ import annotations

import pytest
import torch

from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec
from fdm_engine.samplers import make_sampler
from sampling_schemes import job_source
from sampling_schemes.levels import LevelOptions

SCHEDULE = NoiseSchedule(DiffusionConfig())
ORACLE = GaussianProcessOracle(parse_oracle_spec("oracle:periodic:size=2"), SCHEDULE)


def sample(scheme, options, sampler="dpm++2m", batch_size=2, seed=3, context_noise=None, T=16):
    s = make_sampler(sampler, SCHEDULE, options.steps)
    given = ORACLE.sample_prior(2, 3, generator=torch.Generator().manual_seed(0))
    state = SamplingState.start(given, T)
    Executor(ORACLE, s, batch_size=batch_size, seed=seed, context_noise=context_noise).run(
        job_source(scheme, T, 3, 6, None, options=options), state)
    return state


@pytest.mark.parametrize("scheme, options", [("fifo", LevelOptions(steps=6, partitions=2, lookahead=True)),
                                             ("ar-step", LevelOptions(steps=4, block_size=2, ar_step=1)),
                                             ("df-trapezoid", LevelOptions(steps=4))])
def test_batching_does_not_change_frames(scheme, options):
    one, many = sample(scheme, options, "ddpm", batch_size=1), sample(scheme, options, "ddpm", batch_size=5)
    assert bool(one.done.all()) and bool((one.levels == 0).all())
    torch.testing.assert_close(one.buffer, many.buffer, atol=1e-5, rtol=0)
    assert one.nfe == many.nfe


def test_nfe_counts_calls_of_per_frame_jobs():
    o = LevelOptions(steps=4)
    from sampling_schemes import plan

    state = sample("fifo", o)
    assert state.nfe == 2 * plan("fifo", 16, 3, 6, None, o).nfe(4)  # two videos


def test_context_noise_changes_samples_reproducibly():
    o = LevelOptions(steps=4)
    a, b = sample("df-pyramid", o, context_noise=100), sample("df-pyramid", o, context_noise=100)
    clean = sample("df-pyramid", o)
    assert torch.equal(a.buffer, b.buffer) and not torch.equal(a.buffer, clean.buffer)
    assert torch.equal(a.buffer[:, :3], clean.buffer[:, :3])  # the observed frames stay clean


def test_refusals():
    with pytest.raises(FdmError, match="--steps 5"):
        s = make_sampler("ddim", SCHEDULE, 5)
        Executor(ORACLE, s).run(job_source("fifo", 8, 2, 6, None, options=LevelOptions(steps=4)),
                                SamplingState.start(torch.zeros(1, 2, 1, 2, 2), 8))
    with pytest.raises(FdmError, match="--context-noise"):
        Executor(ORACLE, make_sampler("ddim", SCHEDULE, 5), context_noise=1000)


def test_fdm_sample_fifo_resume_is_bit_identical(tmp_path):
    """A killed per-frame run (frames left part-way in the journal) resumes to the same videos."""
    import numpy as np

    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling

    cfg = SampleConfig(model="oracle:periodic:size=4", scheme="fifo", length=14, n_obs=3, max_frames=6, steps=4,
                       num_videos=1, formats=("npz",), partitions=1, context_noise=30.0)
    run_sampling(cfg, tmp_path / "whole", progress=False)

    class Stop(Exception):
        pass

    import fdm_engine.sample_run as sr

    original, rounds = sr.RunState.commit, []

    def commit(self, counters=None):
        original(self, counters)
        rounds.append(1)
        if len(rounds) == 6:  # mid-video: some frames sit at intermediate levels
            raise Stop

    sr.RunState.commit = commit
    try:
        with pytest.raises(Stop):
            run_sampling(cfg, tmp_path / "cut", progress=False)
    finally:
        sr.RunState.commit = original
    run_sampling(cfg, tmp_path / "cut", resume=True, progress=False)
    a = np.load(tmp_path / "whole" / "video_0000.npz")
    b = np.load(tmp_path / "cut" / "video_0000.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++2m"])
def test_fdm_jobs_are_the_start_max_end_zero_case(sampler):
    """An FDM plan written as per-frame jobs (every latent frame from N to 0 together) samples the
    same frames, bit for bit, as the FDM path."""
    from sampling_schemes import Job, Plan, plan
    from sampling_schemes.source import StaticSource

    s = make_sampler(sampler, SCHEDULE, 5)
    fdm = plan("hierarchy-2", 20, 3, 6)
    staged = Plan(20, 3, [Job.staged(j.observed, {f: range(5, -1, -1) for f in j.latent}, 5, j.level)
                          for j in fdm.jobs])
    given = ORACLE.sample_prior(2, 3, generator=torch.Generator().manual_seed(0))
    out = []
    for p in (fdm, staged):
        state = SamplingState.start(given, 20)
        Executor(ORACLE, s, batch_size=3, seed=5).run(StaticSource(p), state)
        out.append(state.buffer)
    assert torch.equal(out[0], out[1])
