"""`fdm eval ...`: JSON outputs parse, files are written, user mistakes exit 2 with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import math

import pytest

from cli_helpers import run_fdm

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


run = run_fdm


def ok_json(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_scheme_json_and_text(capsys):
    r = ok_json(capsys, "eval", "scheme", "autoreg", "--length", "60", "--n-obs", "4", "--max-frames", "8", "--json")
    assert r["kl"] > 0 and len(r["variance_ratio"]) == 60 and r["jobs"] == 14 and r["sampler"] == "exact"
    code, out, _ = run(capsys, "eval", "scheme", "hierarchy-2", "--length", "60", "--n-obs", "4", "--max-frames", "8")
    assert code == 0 and "exact KL" in out


def test_scheme_monte_carlo_reports_an_error_bar(capsys):
    r = ok_json(capsys, "eval", "scheme", "autoreg", "--length", "30", "--n-obs", "4", "--max-frames", "8",
                "--oracle", "oracle:periodic:lengthscale=4,period=12,size=16", "--sampler", "ddim", "--steps", "10",
                "--monte-carlo", "16", "--json")
    mc = r["monte_carlo"]
    assert mc["n"] == 16 * 256 and mc["se"] > 0 and mc["exact_kl_same_sampler"] == r["kl"]
    assert mc["agrees_3se"] is True
    adaptive = ok_json(capsys, "eval", "scheme", "adaptive-autoreg", "--length", "30", "--n-obs", "4",
                       "--max-frames", "8", "--oracle", "oracle:periodic:size=16", "--monte-carlo", "8",
                       "--steps", "5", "--sampler", "ddim", "--json")
    assert adaptive["kl"] is None and adaptive["monte_carlo"]["lower_bound"] is True


def test_schemes_all_table_and_png(capsys, tmp_path):
    png = tmp_path / "schemes.png"
    r = ok_json(capsys, "eval", "schemes", "--all", "--levels", "2,3", "--length", "80", "--n-obs", "8",
                "--max-frames", "10", "--out", str(png), "--json")
    names = [row["scheme"] for row in r["schemes"]]
    assert {"autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-2-parallel"} <= set(names)
    assert not any(n.startswith("adaptive") for n in names)
    assert png.read_bytes()[:8] == PNG
    code, out, err = run(capsys, "eval", "schemes", "autoreg", "hierarchy-2", "--length", "80", "--n-obs", "8",
                         "--max-frames", "10", "--out", str(png))
    assert code == 0 and "hierarchy-2" in out and "KL" in out
    assert "scoring schemes" in err and "2/2" in err and "scoring" not in out  # progress, on stderr
    code, out, err = run(capsys, "eval", "schemes", "autoreg", "hierarchy-2", "--length", "80", "--n-obs", "8",
                         "--max-frames", "10", "--out", str(png), "--quiet")
    assert code == 0 and err == ""


def test_sampler_and_samplers(capsys, tmp_path):
    r = ok_json(capsys, "eval", "sampler", "ddim", "--steps", "10", "--spacing", "linspace", "--observed", "0,3,6",
                "--latent", "1,4,9", "--monte-carlo", "4096", "--json")
    assert r["kl"] > 0 and r["observed"] == [0, 3, 6] and "se" in r["monte_carlo"]
    png = tmp_path / "samplers.png"
    r = ok_json(capsys, "eval", "samplers", "--samplers", "ddim,dpm++2m", "--spacings", "logsnr,linspace",
                "--steps", "5,20", "--observed", "0-3", "--latent", "4-7", "--out", str(png), "--json")
    assert len(r["results"]) == 8 and png.read_bytes()[:8] == PNG
    code, out, err = run(capsys, "eval", "samplers", "--samplers", "dpm++2m", "--spacings", "logsnr", "--steps", "5,20",
                         "--out", str(png))
    assert code == 0 and "dpm++2m" in out
    assert "scoring samplers" in err and "2/2" in err and "dpm++2m logsnr 20" in err  # a cell per setting
    code, _, err = run(capsys, "eval", "samplers", "--samplers", "dpm++2m", "--spacings", "logsnr", "--steps", "5",
                       "--out", str(png), "-q")
    assert code == 0 and err == ""


def test_schemes_plot_keeps_a_runaway_row_off_the_scale(tmp_path, monkeypatch):
    """One diverging row (KL 1e151, as df-autoregressive under history guidance) must not set the
    axes: they span the others, the runaway bar is drawn to the edge with its value written, and
    both line panels are named in a legend."""
    import math

    from fdm_engine.evaluation import plots
    from fdm_engine.evaluation.scheme_score import SchemeScore

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    scores = []
    for i in range(14):  # more rows than the old legend allowed (12)
        runaway = i == 5
        ratio = [1.0] * 4 + [1e150 if runaway else 1 + 0.1 * i] * 6
        error = [1e149 if runaway else 0.01 * i] * 10
        scores.append(SchemeScore(f"s{i}", 10, 4, 8, 4, 2, "x", 1.16e151 if runaway else 0.01 * (i + 1),
                                  ratio, error, error))
    plots.plot_schemes(scores, tmp_path / "p.png", "title")
    bars, ratios, errors = figures[0].axes
    assert bars.get_xscale() == "log" and bars.get_xlim()[1] < 1e6  # not 1e155
    assert max(p.get_width() for p in bars.patches) < 1e6
    labels = [t.get_text() for t in bars.texts]
    assert labels[5] == "1.16e+151 (off scale)" and labels[0] == "0.01"
    assert ratios.get_ylim()[1] < 10 and errors.get_ylim()[1] < 1
    legend = [t.get_text() for t in errors.get_legend().get_texts()]
    assert len(legend) == 14 and legend[5] == "s5 (off scale)" and legend[0] == "s0"
    assert plots.off_scale_limit([1, 2, 3, 4, 1e9]) == 3e3 and plots.off_scale_limit([1, 2, 3]) is None


def test_schemes_plot_of_only_singular_schemes_is_drawn(tmp_path, monkeypatch):
    """Every KL infinite (singular covariances): the plot is still drawn, not an axis-limit error."""
    from fdm_engine.evaluation import plots
    from fdm_engine.evaluation.scheme_score import SchemeScore

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    scores = [SchemeScore(f"s{i}", 10, 4, 8, 4, 2, "x", float("inf"), [1.0] * 10, [0.0] * 10, [0.0] * 10)
              for i in range(2)]
    plots.plot_schemes(scores, tmp_path / "p.png", "title")
    assert len(figures) == 1 and all(map(math.isfinite, figures[0].axes[0].get_xlim()))
    assert plots.off_scale_limit([1, 2, math.inf]) == 1.5e3


def test_video_after_a_real_sample_run(capsys, tmp_path):
    """`fdm data make` -> `fdm sample` (oracle, conditioned on the dataset) -> `fdm eval video`."""
    from fdm_engine.datasets import make_dataset

    data = make_dataset("revisit-world", tmp_path / "data", num_videos=1, length=30, size=16, num_test=2, seed=0)
    samples = tmp_path / "samples"
    code, _, err = run(capsys, "sample", "oracle:periodic:channels=3,size=16", "--obs", "revisit-world:test",
                       "--data-dir", str(data), "--n-obs", "6", "--max-frames", "10", "--steps", "5",
                       "--num-videos", "2", "--format", "npz", "--out", str(samples), "--quiet")
    assert code == 0, err
    r = ok_json(capsys, "eval", "video", str(samples), "--json")
    assert r["videos"] == 2 and r["n_obs"] == 6 and len(r["psnr"]["per_frame"]) == 30
    assert r["revisit"] is not None and r["revisit"]["pairs"] > 0
    assert json.loads((samples / "eval.json").read_text())["ssim"]["mean"] == r["ssim"]["mean"]
    assert (samples / "eval.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv,message", [
    (["scheme", "nosuch", "--length", "50"], "unknown sampling scheme"),
    (["scheme", "autoreg", "--length", "30", "--n-obs", "40"], "--n-obs must be < --length"),
    (["scheme", "autoreg", "--length", "50", "--oracle", "oracle:nokernel"], "unknown GP covariance"),
    (["scheme", "adaptive-autoreg", "--length", "50"], "no exact score"),
    (["scheme", "autoreg", "--length", "50", "--sampler", "nosuch"], "unknown sampler"),
    (["schemes", "--length", "50"], "--all"),
    (["sampler", "ddim", "--observed", "0,x"], "--observed"),
    (["sampler", "ddim", "--observed", "1", "--latent", "1"], "distinct"),
    (["samplers", "--samplers", "foo"], "--samplers"),
    (["schemes", "autoreg", "--length", "40", "--sampler", "ddim", "--history-drop", "keep-nearest:2"],
     "--history-drop keep-nearest:2: has no effect without --history-guidance"),  # as fdm sample says
    (["video", "/nonexistent/samples"], "no such folder"),
])
def test_bad_input_one_line_exit_2(capsys, argv, message):
    code, _, err = run(capsys, "eval", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # ~6 s: a process of its own
def test_real_process_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cli.main", "eval", "scheme", "autoreg", "--length", "40", "--n-obs", "5",
            "--max-frames", "40", "--step-size", "35", "--json"]
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert abs(json.loads(r.stdout)["kl"]) < 1e-8  # one job for the whole video: exact
    bad = subprocess.run(argv[:5] + ["nosuch", "--length", "40"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
