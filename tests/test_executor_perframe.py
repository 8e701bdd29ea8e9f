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


@pytest.mark.parametrize("scheme, sampler", [("fifo", "dpm++2m"), ("ar-step", "unipc"), ("fifo", "dpm++2m-sde")])
def test_fdm_sample_per_frame_resume_is_bit_identical(tmp_path, scheme, sampler):
    """A killed per-frame run (frames left part-way in the journal, with their sampler history)
    resumes to the same videos, bit for bit."""
    import numpy as np

    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling
    from fdm_engine.sample_state import RunState, read_records

    cfg = SampleConfig(model="oracle:periodic:size=4", scheme=scheme, sampler=sampler, length=14, n_obs=3,
                       max_frames=6, steps=4, num_videos=1, formats=("npz",), context_noise=30.0,
                       **({"partitions": 1} if scheme == "fifo" else {"block_size": 2}))  # what each reads
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
    state = RunState.load(tmp_path / "cut", 0)
    journal = [h for h, _ in read_records(state.journal_path(0), state.manifest.journals["0"])]
    assert any("carry" in h for h in journal)  # the cut fell while frames held history
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


@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++3m", "unipc"])
@pytest.mark.parametrize("scheme, options", [("fifo", LevelOptions(steps=5, partitions=2, lookahead=True)),
                                             ("fifo", LevelOptions(steps=4)),
                                             ("ar-step", LevelOptions(steps=4, block_size=2, ar_step=1)),
                                             ("df-pyramid", LevelOptions(steps=4))])
def test_frames_crossing_jobs_follow_one_sampler(scheme, options, sampler):
    """Frames the plan's jobs leave part-way go on with their own multistep history: the executor
    (batched or not) makes the frames ONE sampler makes running every call of the plan in turn
    (tests/perframe_reference.py), though fifo and ar-step cut every frame's trajectory into
    several jobs."""
    from perframe_reference import one_sampler_run, start_noise

    from sampling_schemes import plan

    p = plan(scheme, 14, 3, 6, None, options)
    cut = sum(1 for j in p.jobs for a, b in zip(j.start, j.end) if 0 < b < a)
    assert scheme == "df-pyramid" or cut > 0  # frames really cross job boundaries
    s = make_sampler(sampler, SCHEDULE, options.steps)
    given = ORACLE.sample_prior(1, 3, generator=torch.Generator().manual_seed(0))
    ref = one_sampler_run(p, ORACLE, make_sampler(sampler, SCHEDULE, options.steps),
                          start_noise(p, given[0], given.shape[2:], seed=3, video=0))
    for batch_size in (1, 4):
        state = SamplingState.start(given, 14)
        Executor(ORACLE, s, batch_size=batch_size, seed=3).run(job_source(scheme, 14, 3, 6, None, options=options),
                                                               state)
        torch.testing.assert_close(state.buffer, ref, atol=2e-5, rtol=1e-4)
        assert state.history == [{}]  # every frame clean: no history left


def test_a_frame_left_at_pure_noise_keeps_its_value_and_history():
    """The level encoding: a job that shows a frame at pure noise without moving it leaves it at
    level N (not 'not started'): the next job goes on from that value, and checks it finds it
    there. One per-frame job cut into three (a frame waits at N across the first cut) makes the
    frames of the uncut job."""
    from sampling_schemes import Job, Plan
    from sampling_schemes.source import StaticSource

    from fdm_engine.executor import NOT_STARTED, OpenVideo

    N = 4
    levels = {3: [4, 3, 2, 1, 0, 0, 0], 4: [4, 4, 4, 3, 2, 1, 0], 5: [4, 4, 3, 2, 1, 0, 0]}
    whole = Plan(6, 3, [Job.staged([0, 1, 2], levels, N)])
    cuts = [(0, 2), (2, 5), (5, 6)]
    parts = Plan(6, 3, [Job.staged([0, 1, 2] + [f for f, v in levels.items() if v[a] == 0],
                                   {f: v[a:b + 1] for f, v in levels.items() if v[a] != 0}, N) for a, b in cuts])
    assert parts.jobs[0].end[1] == N  # frame 4 waits at pure noise across the first cut
    given = ORACLE.sample_prior(1, 3, generator=torch.Generator().manual_seed(1))
    out = []
    for p in (whole, parts):
        state = SamplingState.start(given, 6)
        seen = []
        Executor(ORACLE, make_sampler("dpm++2m", SCHEDULE, N), seed=2).run(
            StaticSource(p), state, on_round=lambda st: seen.append(st.levels[0].tolist()))
        out.append(state.buffer)
    assert seen[0] == [0, 0, 0, 2, N, 3]  # after the first job of the cut plan: frame 4 at N
    # the first job draws every frame's noise; the cut plan's later jobs draw none they use
    torch.testing.assert_close(out[1], out[0], atol=2e-5, rtol=1e-4)
    video = OpenVideo.start(0, given[0], 6, StaticSource(parts).video(given[0]))
    assert video.levels.tolist() == [0, 0, 0, NOT_STARTED, NOT_STARTED, NOT_STARTED]
    with pytest.raises(RuntimeError, match="expects"):
        video.check_start(parts.jobs[1])  # the second job's frames were never started


def test_journal_round_trips_the_carried_state_and_refuses_a_short_one(tmp_path):
    from sampling_schemes import Job

    from fdm_engine.sample_state import BadState, RunState, record_head
    from fdm_engine.samplers.history import FrameState

    job = Job.staged([0], {1: [4, 3], 2: [4, 4]}, 4)
    frames = torch.randn(2, 1, 2, 2)
    carried = {f: FrameState({"x0_0": torch.randn(1, 2, 2)}, {"lam_0": torch.tensor(0.5, dtype=torch.float64),
                                                             "count": torch.tensor(f)}) for f in (1, 2)}
    state = RunState.fresh(tmp_path, 0, {})
    state.append(0, 3, job, frames, carried)
    state.append(0, 4, Job.make([0], [5]), frames[:1])  # an FDM job's record: no carry
    state.commit()
    made = RunState.load(tmp_path, 0).made(0, (1, 2, 2))
    header, back, states = made[3]
    assert torch.equal(back, frames) and sorted(states) == [1, 2] and made[4][2] == {}
    for f in (1, 2):
        for part in ("values", "meta"):
            for k, v in getattr(carried[f], part).items():
                assert torch.equal(getattr(states[f], part)[k], v)
    # a record whose header promises more state than its payload holds
    spec = carried[1].spec()
    payload = memoryview(frames.numpy()).cast("B").tobytes() + b"\0" * 4
    head = record_head({"order": 5, "observed": [0], "latent": [1, 2], "carry": {"frames": [1], "spec": spec}},
                       payload)
    state.close()
    with open(state.journal_path(0), "ab") as f:
        f.write(head + payload)
    state.manifest.journals["0"] = state.journal_path(0).stat().st_size
    state.commit()
    with pytest.raises(BadState, match="sampler state"):
        RunState.load(tmp_path, 0).made(0, (1, 2, 2))
