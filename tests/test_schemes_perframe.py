"""Per-frame-level schemes (docs/perframe.md): properties over random settings, checked by replaying
each plan frame by frame here (independently of sampling_schemes.checks), and their options."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fdm_engine.errors import FdmError
from sampling_schemes import get_scheme, plan
from sampling_schemes.levels import LevelOptions

PER_FRAME = ["df-pyramid", "df-trapezoid", "df-autoregressive", "fifo", "ar-step"]


def replay(p, n_obs: int, K: int, N: int) -> dict[int, list[int]]:
    """Each frame's level after every call that includes it, starting from N; asserts the per-call
    rules on the way (K per call, observed frames clean, nobody touches a clean frame)."""
    history: dict[int, list[int]] = {}
    level = {f: 0 for f in range(n_obs)}
    for job in p.jobs:
        assert len(job.observed) + len(job.latent) <= K
        assert all(level.get(f) == 0 for f in job.observed), "observes a frame that is not clean"
        assert job.grid == N and job.schedule is not None
        for i, f in enumerate(job.latent):
            column = [row[i] for row in job.schedule]
            assert level.get(f, N) == column[0] != 0, f"frame {f} found at {level.get(f, N)}, plan says {column[0]}"
            history.setdefault(f, [N]).extend(column[1:])
            level[f] = column[-1]
    return history


@st.composite
def settings_(draw):
    T = draw(st.integers(1, 60))
    n_obs = draw(st.integers(0, T - 1))
    K = draw(st.integers(2, 16))
    S = draw(st.integers(1, K - 1))
    N = draw(st.integers(1, 12))
    o = LevelOptions(steps=N, uncertainty_scale=draw(st.sampled_from([0.0, 0.5, 1.0, 1.7, 3.0])),
                     partitions=draw(st.integers(-(-N // K), N)), lookahead=draw(st.booleans()),
                     block_size=draw(st.integers(1, S)), ar_step=draw(st.integers(0, N + 1)))
    return T, n_obs, K, S, o


@pytest.mark.parametrize("scheme", PER_FRAME)
@settings(max_examples=60, deadline=None)
@given(s=settings_())
def test_every_frame_denoised_once_in_n_steps(scheme, s):
    T, n_obs, K, S, o = s
    p = plan(scheme, T, n_obs, K, S, o)
    history = replay(p, n_obs, K, o.steps)
    assert sorted(history) == list(range(n_obs, T))  # no frame left out, tail frames included
    for f, levels in history.items():
        assert all(b <= a for a, b in zip(levels, levels[1:])), f"frame {f}'s level rises: {levels}"
        assert levels[-1] == 0 and levels.count(0) == 1 + (len(levels) - 1 - levels.index(0)), levels
        moves = [a - b for a, b in zip(levels, levels[1:]) if a != b]
        assert moves == [1] * o.steps, f"frame {f}: {moves}"  # N sampler steps, one level each
    assert plan(scheme, T, n_obs, K, S, o).to_json() == p.to_json()  # identical on repeat


def test_fdm_schemes_ignore_level_options():
    base = plan("hierarchy-2", 300, 36, 20).to_json()
    assert plan("hierarchy-2", 300, 36, 20, None, LevelOptions(steps=7, block_size=3)).to_json() == base


def test_pyramid_matrix():
    """Diffusion Forcing's pyramid for one chunk of 3 frames, N = 2, u = 1, worked by hand."""
    p = plan("df-pyramid", 3, 0, 3, 1, LevelOptions(steps=2, uncertainty_scale=1.0))
    assert p.jobs[0].schedule == ((2, 2, 2), (1, 2, 2), (0, 1, 2), (0, 0, 1), (0, 0, 0))


def test_fifo_steady_state_is_diagonal():
    p = plan("fifo", 20, 2, 10, None, LevelOptions(steps=4))
    job = p.jobs[10]  # frames 10..13 in the queue, 2 given + 7 finished frames clean
    assert job.schedule == ((1, 2, 3, 4), (0, 1, 2, 3)) and job.observed == (3, 4, 5, 6, 7, 8)


def test_fifo_partitions_run_together():
    p = plan("fifo", 40, 4, 8, None, LevelOptions(steps=12, partitions=3))
    assert p.widest == 3 and p.depth == 36 + 11  # one round per diagonal step
    lookahead = plan("fifo", 40, 4, 8, None, LevelOptions(steps=12, partitions=3, lookahead=True))
    assert lookahead.nfe(12) > p.nfe(12)


@pytest.mark.parametrize("options, flag", [(dict(partitions=1, steps=25), "--partitions"),
                                           (dict(block_size=30), "--block-size")])
def test_bad_options_name_the_flag(options, flag):
    scheme = "fifo" if "partitions" in options else "ar-step"
    with pytest.raises(FdmError, match=flag):
        plan(scheme, 50, 4, 20, None, LevelOptions(**options))


@pytest.mark.parametrize("field, value", [("steps", 0), ("uncertainty_scale", -1.0), ("ar_step", -1)])
def test_bad_level_options(field, value):
    with pytest.raises(FdmError, match="--" + field.replace("_", "-")):
        LevelOptions(**{field: value})


def test_registered():
    assert all(get_scheme(n).per_frame for n in PER_FRAME)


# --- the command line ------------------------------------------------------------------------------

def cli_run(*args):
    from click.testing import CliRunner

    from cli.main import cli

    return CliRunner().invoke(cli, list(args))


def test_show_draws_levels_per_call(tmp_path):
    png = tmp_path / "p.png"
    r = cli_run("schemes", "show", "df-pyramid", "--length", "9", "--n-obs", "3", "--max-frames", "6",
                "--step-size", "3", "--steps", "2", "--width", "40", "--out", str(png))
    assert r.exit_code == 0, r.output
    rows = [line.split("|")[1] for line in r.output.splitlines() if "|" in line]
    # chunk 1 (frames 3-5, N=2, u=1): 4 calls, then chunk 2 (frames 6-8)
    assert rows[:4] == ["___599...", "____59...", "_____5...", "______..."]  # level 1 of 2: band 5
    assert len(rows) == 8 and png.read_bytes()[:4] == b"\x89PNG"


def test_stats_counts_calls():
    import json

    r = cli_run("schemes", "stats", "fifo", "--length", "40", "--n-obs", "4", "--max-frames", "8", "--steps", "12",
                "--partitions", "3", "--json")
    out = json.loads(r.output)
    assert out["depth"] == out["calls"] == 36 + 11 and out["widest"] == 3 and out["nfe"] == out["jobs"]


def test_eval_scheme_needs_a_sampler_for_per_frame(capsys):
    from cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "scheme", "fifo", "--length", "20", "--n-obs", "4"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sampler" in err and err.count("\n") == 1


def test_eval_schemes_columns_for_context_noise_and_history_guidance(tmp_path):
    import json

    r = cli_run("eval", "schemes", "autoreg", "fifo", "--length", "12", "--n-obs", "3", "--max-frames", "6",
                "--sampler", "ddim", "--steps", "4", "--context-noise", "50", "--history-guidance", "0.5",
                "--out", str(tmp_path / "c.png"), "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["schemes"]
    assert [row["scheme"] for row in rows] == ["autoreg", "fifo"]
    assert all(len({row["kl"], row["kl_context_noise"], row["kl_history_guidance"]}) == 3 for row in rows)
    assert rows[1]["nfe"] == 12 - 3 + 4 - 1  # fifo: one call per diagonal step, one partition
