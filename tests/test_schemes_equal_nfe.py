"""`fdm eval schemes` at equal NFE: each scheme (and its history-guided variant) runs the steps whose
network evaluations come nearest one budget, checked against hand counts of the plans."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from cli_helpers import run_fdm
from fdm_engine.errors import FdmError
from fdm_engine.evaluation.scheme_score import steps_for_nfe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("per_step, budget, expected", [
    (7, 50, (7, 49)),  # 49 is nearer 50 than 56
    (7, 53, (8, 56)),
    (2, 5, (2, 4)),  # a tie (4 and 6): the fewer steps
    (9, 12, (1, 9)),
    (30, 12, (1, 30)),  # one step already passes the budget: as near as it gets
])
def test_steps_for_nfe_is_the_nearest(per_step, budget, expected):
    for guess in (1, 5, 40):
        assert steps_for_nfe(budget, lambda k: per_step * k, guess=guess) == expected


def test_steps_for_nfe_with_an_offset_and_a_refusal():
    # fifo-like: the queue's fill-up costs a fixed 9 calls, then one per step
    assert steps_for_nfe(30, lambda k: 9 + k, guess=25) == (21, 30)
    with pytest.raises(FdmError, match="--nfe"):
        steps_for_nfe(0, lambda k: k)


def eval_schemes(tmp_path, *extra):
    r = CliRunner().invoke(cli, ["eval", "schemes", "autoreg", "hierarchy-3", "df-autoregressive", "--length", "12",
                                 "--n-obs", "3", "--max-frames", "6", "--step-size", "3", "--sampler", "ddim",
                                 "--steps", "4", "--out", str(tmp_path / "s.png"), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # the progress bar goes to stderr


def test_eval_schemes_fits_every_scheme_to_the_first_ones_nfe(tmp_path):
    """T = 12, 3 given, K = 6, S = 3. By hand: autoreg 3 jobs (budget 3 x 4 = 12); hierarchy-3 4 jobs
    (3 steps: 12; levels 1, 2, 3, 3 of 3, 3, 2, 1 frames); df-autoregressive 3 chunks of 3 frames, each one frame after the other: 9 calls
    per step (1 step: 9, nearer 12 than 18). History guidance (drop all): every call has history, so
    each costs 2: autoreg 2 steps (12), hierarchy-3 1 or 2 steps (8 or 16: a tie, the fewer),
    df-autoregressive 1 step (18, the least there is)."""
    r = eval_schemes(tmp_path, "--history-guidance", "1", "--context-noise", "40")
    assert r["nfe_budget"] == 12
    got = {row["scheme"]: (row["jobs"], row["steps"], row["nfe"], row["steps_history_guidance"],
                           row["nfe_history_guidance"]) for row in r["schemes"]}
    assert got == {"autoreg": (3, 4, 12, 2, 12), "hierarchy-3": (4, 3, 12, 1, 8),
                   "df-autoregressive": (3, 1, 9, 1, 18)}
    assert all(row["kl_context_noise"] != row["kl"] for row in r["schemes"])
    equal = eval_schemes(tmp_path, "--equal-steps")
    assert equal["nfe_budget"] is None and {row["steps"] for row in equal["schemes"]} == {4}
    assert [row["nfe"] for row in equal["schemes"]] == [12, 16, 36]
    assert [row["nfe"] for row in eval_schemes(tmp_path, "--nfe", "36")["schemes"]] == [36, 36, 36]


def test_eval_schemes_table_prints_steps_and_nfe_per_row(tmp_path):
    r = CliRunner().invoke(cli, ["eval", "schemes", "autoreg", "df-autoregressive", "--length", "12", "--n-obs", "3",
                                 "--max-frames", "6", "--step-size", "3", "--sampler", "ddim", "--steps", "4",
                                 "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()  # the table (the progress bar goes to stderr)
    assert "steps per scheme for 12 NFE" in lines[0] and lines[1].split()[:5] == ["scheme", "jobs", "steps", "NFE",
                                                                                   "rounds"]
    assert lines[3].split()[:4] == ["df-autoregressive", "3", "1", "9"]


def test_a_spacing_file_cannot_be_fitted(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([900, 500, 100]))
    args = ["eval", "schemes", "autoreg", "--length", "12", "--n-obs", "3", "--max-frames", "6", "--sampler", "ddim",
            "--spacing", str(f), "--out", str(tmp_path / "s.png")]
    code, _, err = run_fdm(capsys, *args)
    assert code == 2 and "--equal-steps" in err and err.count("\n") == 1, err
    assert run_fdm(capsys, *args, "--equal-steps")[0] == 0


def readme_scheme_table() -> list[list[str]]:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text()
    head = "| scheme | steps | NFE | rounds | exact KL | with --context-noise 50 |"
    lines = text[text.index(head):].splitlines()[2:]
    rows = itertools.takewhile(lambda line: line.startswith("| "), lines)
    return [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in rows]


@pytest.mark.slow
def test_readme_scheme_table_is_what_the_code_plans_and_scores():
    """README's table at equal NFE: every row's steps, NFE and rounds (both variants) from the plans,
    and the KLs of two rows, as `fdm eval schemes --all ... --steps 25 --history-guidance 1` prints."""
    from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
    from fdm_engine.evaluation.scheme_score import level_options, scheme_nfe, score_scheme, static_plan, static_schemes
    from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec
    from fdm_engine.samplers import make_sampler

    schedule = NoiseSchedule(DiffusionConfig())
    make = lambda k: make_sampler("dpm++2m", schedule, k)  # noqa: E731  (fdm sample's default spacing)
    plan = (300, 36, 20, None)
    rows = readme_scheme_table()
    assert [r[0] for r in rows] == static_schemes((2, 3), per_frame=True)
    budget = scheme_nfe("autoreg", *plan, make(25))
    assert budget == 675
    for name, steps, nfe, rounds, _, _, hg_steps, hg_nfe, _ in rows:
        for drop, k, n in ((None, steps, nfe), ("all", hg_steps, hg_nfe)):
            assert steps_for_nfe(budget, lambda j: scheme_nfe(name, *plan, make(j), None, drop), guess=25) == (
                int(k), int(n)), (name, drop)
        assert static_plan(name, *plan, level_options(make(int(steps)), None)).depth == int(rounds)
    oracle = GaussianProcessOracle(parse_oracle_spec("oracle:periodic"), schedule)
    for r in rows:
        if r[0] in ("hierarchy-2-parallel", "fifo"):
            kl = score_scheme(r[0], *plan, oracle=oracle, sampler=make(int(r[1]))).kl
            assert f"{kl:.3g}" == r[4], r
