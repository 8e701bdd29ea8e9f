"""`fdm schemes ...` end to end (click's CliRunner, and one real process for the exit code)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import cli, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    result = CliRunner().invoke(cli, ["schemes", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_list():
    out = run("list")
    assert "hierarchy-N-parallel" in out and "adaptive-autoreg" in out


def test_plan_json():
    out = json.loads(run("plan", "hierarchy-2", "--length", "300", "--n-obs", "36", "--json"))
    assert len(out["jobs"]) == 27
    assert out["jobs"][1] == {"observed": [32, 33, 34, 35, 36, 65, 94, 123, 153, 182], "latent": list(range(37, 47))}


def test_plan_text_and_adaptive_preview():
    assert "generate [5, 6, 7]" in run("plan", "autoreg", "--length", "20", "--n-obs", "5", "--max-frames", "6")
    out = CliRunner().invoke(cli, ["schemes", "plan", "adaptive-autoreg", "--length", "40", "--n-obs", "5", "--json"])
    assert out.exit_code == 0 and len(json.loads(out.stdout)["jobs"]) == 4


def test_show_writes_png_and_text(tmp_path):
    png = tmp_path / "scheme.png"
    out = run("show", "hierarchy-2", "--length", "300", "--n-obs", "36", "--out", str(png), "--width", "60")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in out.splitlines() if "│" in line]
    assert len(rows) == 27 and all(len(r) <= 60 for r in rows)
    assert "generated now" in out


def test_show_small_video_one_column_per_frame():
    out = run("show", "autoreg", "--length", "12", "--n-obs", "4", "--max-frames", "6", "--step-size", "4")
    assert out.splitlines()[:2] == ["0 │░░oo████····", "1 │░░░░░░oo████"]


def test_stats():
    out = json.loads(run("stats", "hierarchy-2-parallel", "--length", "300", "--n-obs", "36", "--steps", "50", "--json"))
    assert out["nfe"] == out["jobs"] * 50 and out["depth"] <= 5 and out["widest"] > 1
    assert "depth:  27" in run("stats", "hierarchy-2", "--length", "300", "--n-obs", "36")


def test_plan_show_and_stats_share_fdm_samples_steps_default():
    """Per-frame plans depend on --steps (the grid): the same default everywhere gives the same plan
    in plan, show and stats, and it is `fdm sample`'s."""
    from fdm_engine.sample_config import SampleConfig

    k = SampleConfig(model="oracle:ou").steps
    args = ["df-autoregressive", "--length", "10", "--n-obs", "2", "--max-frames", "4"]
    jobs = json.loads(run("plan", *args, "--json"))["jobs"]
    assert {j["grid"] for j in jobs} == {k}
    stats = json.loads(run("stats", *args, "--json"))
    assert stats["nfe"] == sum(len(j["schedule"]) - 1 for j in jobs) == json.loads(
        run("stats", *args, "--steps", str(k), "--json"))["nfe"]
    for sub in ("plan", "show", "stats"):
        steps_help = re.search(r"--steps INTEGER RANGE .*?\[default: (\d+);", " ".join(run(sub, "--help").split()))
        assert int(steps_help.group(1)) == k


def test_stats_counts_history_guided_calls_twice():
    """autoreg, T = 20, 5 given, K = 6, S = 3: 5 jobs, all with history: 5 x 4 steps, twice under
    guidance (drop all); keep-nearest:3 keeps the 3 observed frames of every job: nothing to drop."""
    base = ["stats", "autoreg", "--length", "20", "--n-obs", "5", "--max-frames", "6", "--steps", "4", "--json"]
    plain = json.loads(run(*base))
    assert plain["jobs"] == 5 and plain["nfe"] == 20
    guided = json.loads(run(*base, "--history-guidance", "1"))
    assert guided["nfe"] == 40 and guided["calls"] == plain["calls"]  # both halves: one batched call
    assert json.loads(run(*base, "--history-guidance", "1", "--history-drop", "keep-nearest:3"))["nfe"] == 20
    assert "20 of them with history to drop count twice" in run(*base[:-1], "--history-guidance", "1")


@pytest.mark.parametrize("sub", ["list", "plan", "show", "stats"])
def test_help(sub):
    assert "Usage" in run(sub, "--help")


@pytest.mark.parametrize("args, message", [
    (["plan", "autoreg", "--length", "30", "--n-obs", "40"], "--n-obs must be < --length (got 40 >= 30)"),
    (["stats", "hierarchy-9x", "--length", "30"], "unknown sampling scheme 'hierarchy-9x'"),
    (["show", "hierarchy-2", "--length", "30", "--step-size", "20"], "--step-size must be < --max-frames"),
])
def test_bad_input_one_line_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["schemes", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_input_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "cli.main", "schemes", "plan", "hierarchy-1", "--length", "30"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
