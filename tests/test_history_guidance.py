"""History guidance (fdm_engine/history_guidance.py) on the analytic oracle: W = 0 is the unguided
model bit for bit, the guided prediction is the stated combination of two predictions computed
independently (the reduced one on a job that simply lacks the dropped frames), both halves run in
one network call, and the exact KL of a guided scheme agrees with Monte Carlo through the executor."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.diffusion import NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.evaluation import monte_carlo_scheme, score_scheme
from fdm_engine.executor import Executor, SamplingState
from fdm_engine.history_guidance import HistoryGuidance, parse_drop, with_history_guidance
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig
from fdm_engine.samplers import make_sampler
from sampling_schemes import job_source

SCHED = NoiseSchedule()
pytestmark = pytest.mark.usefixtures("one_thread")


def oracle(**kw) -> GaussianProcessOracle:
    return GaussianProcessOracle(OracleConfig(**{"kernel": "periodic", "lengthscale": 4, "period": 12, **kw}), SCHED)


def sample(model, sampler, scheme="hierarchy-2", length=30, n_obs=4, k=8, videos=2) -> torch.Tensor:
    o = oracle()
    given = o.sample_prior(videos, n_obs, generator=torch.Generator().manual_seed(5))
    state = SamplingState.start(given, length)
    Executor(model, sampler, batch_size=3, seed=7).run(job_source(scheme, length, n_obs, k, None), state)
    return state.buffer


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddpm"])
@pytest.mark.parametrize("drop", ["all", "keep-nearest:2"])
def test_weight_zero_reproduces_the_unguided_samples_bit_identically(sampler, drop):
    s = make_sampler(sampler, SCHED, 4)
    plain = sample(oracle(), s)
    guided = sample(HistoryGuidance(oracle(), 0.0, drop), s)
    assert torch.equal(plain, guided)
    assert not torch.equal(plain, sample(HistoryGuidance(oracle(), 1.0, drop), s)), "W > 0 must change them"
    assert with_history_guidance(oracle(), 0.0).__class__ is GaussianProcessOracle


def nearest_kept(frames: list[int], obs: list[int], lat: list[int], n: int) -> set[int]:
    """The n observed slots nearest (in frame index) to any latent frame, ties to the earlier slot."""
    gap = {i: min(abs(frames[i] - frames[j]) for j in lat) for i in obs}
    return set(sorted(obs, key=lambda i: (gap[i], i))[:n])


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
@pytest.mark.parametrize("drop", ["all", "keep-nearest:1", "keep-nearest:2"])
def test_guided_prediction_is_the_stated_combination(kind, drop):
    """pred = full + W (full - reduced) on latent frames (full on observed), with `reduced` the
    oracle on a smaller job holding only the kept frames; also equal to the same combination of x0
    estimates. Row 1 has a padding slot; row 2 no observed frame."""
    from fdm_engine.diffusion import DiffusionConfig, prediction
    from fdm_engine.diffusion.schedule import expand_like

    sched = NoiseSchedule(DiffusionConfig(prediction=kind))
    o = GaussianProcessOracle(OracleConfig(kernel="ou", lengthscale=3, size=2), sched)
    g = torch.Generator().manual_seed(0)
    frames = torch.tensor([[0, 3, 9, 10, 11, 20, 30], [2, 4, 5, 6, 8, 12, 0], [0, 1, 2, 3, 4, 5, 6]])
    observed = torch.tensor([[1, 1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0, 0], [0] * 7], dtype=torch.bool)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 6] = False
    levels = torch.where(observed, 0.0, torch.tensor([[300.0], [650.0], [40.0]]))
    x = torch.randn(3, 7, 1, 2, 2, generator=g)
    W = 1.5
    out = HistoryGuidance(o, W, drop)(x, frames, levels, observed, valid)

    _, n = parse_drop(drop)
    for b in range(3):
        real = [i for i in range(7) if valid[b, i]]
        obs = [i for i in real if observed[b, i]]
        lat = [i for i in real if not observed[b, i]]
        kept = set(obs) if not obs else (set() if n is None else nearest_kept(frames[b].tolist(), obs, lat, n))
        keep = sorted(kept | set(lat))

        def run(slots):
            sl = torch.tensor(slots)
            return o(x[b:b + 1, sl], frames[b:b + 1, sl], levels[b:b + 1, sl], observed[b:b + 1, sl])[0]

        full = run(real)
        reduced = run(keep)[[keep.index(i) for i in lat]]
        pos = [real.index(i) for i in lat]
        expected = full[pos] + W * (full[pos] - reduced)
        torch.testing.assert_close(out[b, lat], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[b, obs], full[[real.index(i) for i in obs]], rtol=0, atol=0)
        # The same combination of x0 estimates (the conversions are affine in the prediction).
        a, s = (expand_like(c, x[b, lat]) for c in sched.alpha_sigma(levels[b, lat].double()))
        x0 = lambda p: prediction.to_x0(p, kind, x[b, lat], a.float(), s.float())  # noqa: E731
        torch.testing.assert_close(x0(out[b, lat]), x0(full[pos]) + W * (x0(full[pos]) - x0(reduced)),
                                   rtol=1e-4, atol=1e-4)


def test_both_predictions_run_in_one_network_call_of_twice_the_rows():
    o = oracle(size=2)
    calls = []

    def model(x, idx, levels, observed, valid=None):
        calls.append((x.shape[0], observed.clone(), None if valid is None else valid.clone()))
        return o(x, idx, levels, observed, valid)

    B, F = 3, 6
    observed = torch.tensor([True, True, True, False, False, False]).expand(B, F)
    levels = torch.where(observed, 0.0, 500.0)
    HistoryGuidance(model, 2.0, "keep-nearest:1")(torch.randn(B, F, 1, 2, 2), torch.arange(F).expand(B, F),
                                                  levels, observed)
    assert len(calls) == 1 and calls[0][0] == 2 * B
    _, obs, valid = calls[0]
    assert obs[:B].equal(observed) and valid[:B].all()
    # The reduced half keeps frame 2 (nearest the latent frames 3..5) and pads frames 0 and 1.
    assert obs[B:].equal(torch.tensor([False, False, True, False, False, False]).expand(B, F))
    assert valid[B:].equal(torch.tensor([False, False, True, True, True, True]).expand(B, F))
    calls.clear()
    HistoryGuidance(model, 2.0)(torch.randn(B, F, 1, 2, 2), torch.arange(F).expand(B, F), levels,
                                torch.zeros(B, F, dtype=torch.bool))
    assert [c[0] for c in calls] == [B], "a job without history is one plain call"


def test_only_the_jobs_with_history_get_a_reduced_row():
    """A batch mixing a job with history and one without: 3 rows, and each row's output is what the
    job alone gets (the history-free one: the plain model)."""
    o = oracle(size=2)
    rows = []

    def model(x, idx, levels, observed, valid=None):
        rows.append(x.shape[0])
        return o(x, idx, levels, observed, valid)

    F = 6
    observed = torch.tensor([[True, True, False, False, False, False], [False] * F])
    levels = torch.where(observed, 0.0, 400.0)
    x, idx = torch.randn(2, F, 1, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(F).expand(2, F)
    out = HistoryGuidance(model, 1.5)(x, idx, levels, observed)
    assert rows == [2 + 1]
    for b in range(2):
        alone = HistoryGuidance(o, 1.5)(x[b:b + 1], idx[b:b + 1], levels[b:b + 1], observed[b:b + 1])
        torch.testing.assert_close(out[b:b + 1], alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1:], o(x[1:], idx[1:], levels[1:], observed[1:]), rtol=1e-6, atol=1e-6)


class RowCounter(torch.nn.Module):
    """The oracle, counting the rows (jobs) the network evaluates."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x, *args, **kwargs):
        self.rows += x.shape[0]
        return self.model(x, *args, **kwargs)


@pytest.mark.parametrize("drop, guided_nfe", [("all", 10), ("keep-nearest:1", 8), ("keep-nearest:2", 6)])
def test_nfe_counts_each_guided_call_with_history_twice(drop, guided_nfe):
    """df-autoregressive, 3 frames from nothing (n_obs 0), K = 3, N = 2 levels: one job of 6 calls;
    frame j goes 2 -> 0 in calls 2j, 2j+1. Clean history by call: none, none, f0, f0, f0 f1, f0 f1.
    By hand: 'all' drops history in calls 2..5 (6 + 4 = 10), keep-nearest:1 only where 2 frames are
    clean (6 + 2), keep-nearest:2 never (6). The executor's count and the rows the network
    evaluated (one video, so one row per job call) agree with it."""
    from fdm_engine.history_guidance import plan_nfe
    from sampling_schemes.levels import LevelOptions

    s = make_sampler("ddim", SCHED, 2)
    options = LevelOptions(steps=2)
    p = job_source("df-autoregressive", 3, 0, 3, 2, options=options).fixed_plan
    assert [j.calls for j in p.jobs] == [6] and p.nfe(2) == plan_nfe(p, 2) == 6
    assert plan_nfe(p, 2, drop) == guided_nfe
    counter = RowCounter(oracle(size=2))
    state = SamplingState.start(torch.zeros(1, 0, 1, 2, 2), 3)
    Executor(HistoryGuidance(counter, 1.0, drop), s, seed=0).run(
        job_source("df-autoregressive", 3, 0, 3, 2, options=options), state)
    assert state.nfe == counter.rows == guided_nfe


def test_fdm_jobs_count_twice_only_with_history():
    """autoreg from nothing, T = 16, K = 8, S = 4: a first job of 8 frames without history, then two
    jobs observing 4 frames: 3 s NFE unguided, s + 2 x 2 s guided (keep-nearest:4 keeps all 4:
    nothing to drop, 3 s). Two videos batched: the network's rows are the same count per video."""
    from fdm_engine.history_guidance import plan_nfe

    steps = 3
    p = job_source("autoreg", 16, 0, 8, 4).fixed_plan
    assert [len(j.observed) for j in p.jobs] == [0, 4, 4]
    assert (plan_nfe(p, steps), plan_nfe(p, steps, "all"), plan_nfe(p, steps, "keep-nearest:4"),
            plan_nfe(p, steps, "keep-nearest:3")) == (9, 15, 9, 15)
    counter = RowCounter(oracle(size=2))
    state = SamplingState.start(torch.zeros(2, 0, 1, 2, 2), 16)
    Executor(HistoryGuidance(counter, 1.0, "all"), make_sampler("ddim", SCHED, steps), batch_size=2, seed=0).run(
        job_source("autoreg", 16, 0, 8, 4), state)
    assert state.nfe == counter.rows == 2 * 15


def test_exact_kl_of_a_guided_scheme_agrees_with_monte_carlo():
    o = oracle(size=32)
    sampler = make_sampler("dpm++2m", SCHED, 10, "logsnr")
    guided = HistoryGuidance(o, 1.0, "all")
    exact = score_scheme("hierarchy-2", 40, 4, 8, oracle=o, sampler=sampler, denoiser=guided).kl
    plain = score_scheme("hierarchy-2", 40, 4, 8, oracle=o, sampler=sampler).kl
    est = monte_carlo_scheme("hierarchy-2", 40, 4, 8, oracle=o, sampler=sampler, num_videos=8, seed=1,
                             denoiser=guided)
    assert est.agrees(exact, sigmas=3), (est, exact)
    # The oracle is already the exact conditional: extrapolating away from it can only hurt.
    assert exact > plain + 10 * est.se


@pytest.mark.parametrize("scheme", ["df-pyramid", "fifo"])
def test_guided_per_frame_schemes_exact_agrees_with_monte_carlo(scheme):
    """Jobs whose frames sit at different levels: the wrapper guides every moving frame, and the
    per-frame exact score runs it too."""
    o = oracle(size=8, period=24, lengthscale=8)
    s = make_sampler("ddpm", SCHED, 6, "logsnr")
    guided = HistoryGuidance(o, 1.0, "all")
    exact = score_scheme(scheme, 12, 3, 6, 3, oracle=o, sampler=s, denoiser=guided).kl
    est = monte_carlo_scheme(scheme, 12, 3, 6, 3, oracle=o, sampler=s, num_videos=24, seed=1, denoiser=guided)
    assert est.agrees(exact), (est, exact)
    assert exact > 1.02 * score_scheme(scheme, 12, 3, 6, 3, oracle=o, sampler=s).kl  # guidance moved it


def test_keep_nearest_with_all_the_history_is_the_unguided_model():
    s = make_sampler("ddim", SCHED, 4)
    assert torch.equal(sample(oracle(), s), sample(HistoryGuidance(oracle(), 3.0, "keep-nearest:99"), s))


def test_a_markov_video_needs_only_the_newest_frame():
    """OU is Markov: given the newest observed frame, older ones add nothing, so with autoreg
    (history before the latents) guidance against keep-nearest:1 changes nothing; against no
    history it does."""
    s = make_sampler("ddim", SCHED, 4)
    markov = GaussianProcessOracle(OracleConfig(kernel="ou", lengthscale=3), SCHED)
    plain = sample(markov, s, "autoreg")
    torch.testing.assert_close(sample(HistoryGuidance(markov, 2.0, "keep-nearest:1"), s, "autoreg"), plain,
                               rtol=1e-4, atol=1e-4)
    assert (sample(HistoryGuidance(markov, 2.0, "all"), s, "autoreg") - plain).abs().max() > 0.1


@pytest.mark.parametrize("weight,drop,needle", [
    (float("nan"), "all", "--history-guidance nan"), (-1.0, "all", "--history-guidance -1.0"),
    (1.0, "oldest", "'oldest'"), (1.0, "keep-nearest", "needs a frame count"),
    (1.0, "keep-nearest:x", "'keep-nearest:x'"), (1.0, "all:3", "takes no :N"),
])
def test_bad_settings_are_one_line_errors(weight, drop, needle):
    from fdm_engine.sample_config import SampleConfig

    with pytest.raises(FdmError, match=needle) as e:
        SampleConfig(model="oracle:ou", history_guidance=weight, history_drop=drop)
    assert "\n" not in str(e.value)


def test_fdm_sample_and_eval_scheme_take_the_flags(tmp_path, capsys):
    base = ["sample", "oracle:periodic:lengthscale=4,size=4", "--length", "12", "--n-obs", "2", "--steps", "3",
            "--max-frames", "6", "--quiet", "--format", "npz"]
    outs = {}
    for name, extra in (("plain", []), ("zero", ["--history-guidance", "0"]),
                        ("guided", ["--history-guidance", "1.5", "--history-drop", "keep-nearest:2"])):
        code, _, err = run_fdm(capsys, *base, *extra, "--out", str(tmp_path / name))
        assert code == 0, err
        import numpy as np

        with np.load(tmp_path / name / "video_0000.npz") as f:
            outs[name] = f[f.files[0]].copy()
    assert (outs["plain"] == outs["zero"]).all() and not (outs["plain"] == outs["guided"]).all()
    cfg = json.loads((tmp_path / "guided" / "plan.json").read_text())["config"]
    assert (cfg["history_guidance"], cfg["history_drop"]) == (1.5, "keep-nearest:2")
    # NFE: 3 steps per job per video; keep-nearest:2 drops history only from jobs observing > 2 frames
    plain, guided = (json.loads((tmp_path / n / "plan.json").read_text()) for n in ("plain", "guided"))
    videos = plain["config"]["num_videos"]
    assert plain["nfe"] == videos * 3 * len(plain["jobs"])
    longer = sum(len(j["observed"]) > 2 for j in guided["jobs"])
    assert 0 < longer < len(guided["jobs"]) and guided["nfe"] == videos * 3 * (len(guided["jobs"]) + longer)

    code, out, err = run_fdm(capsys, "eval", "scheme", "autoreg", "--length", "16", "--n-obs", "4",
                             "--max-frames", "8", "--sampler", "ddim", "--steps", "4",
                             "--history-guidance", "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["history_guidance"] == {"weight": 1.0, "drop": "all"} and r["kl"] > 0
    code, _, err = run_fdm(capsys, "eval", "scheme", "autoreg", "--length", "16", "--n-obs", "4",
                           "--history-guidance", "1")
    assert code == 2 and "--sampler" in err and err.count("\n") == 1, err


def test_the_count_finds_guidance_under_other_wrappers():
    from fdm_engine.history_guidance import guidance_drop
    from fdm_engine.precision import Autocast

    guided = HistoryGuidance(oracle(size=2), 1.0, "keep-nearest:2")
    assert guidance_drop(guided) == guidance_drop(Autocast(guided, torch.bfloat16, "cpu")) == "keep-nearest:2"
    assert guidance_drop(oracle()) is None and guidance_drop(Autocast(oracle(), torch.bfloat16, "cpu")) is None
