"""`fdm data make / info / list`: the commands work, and user mistakes exit 2 with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_fdm
from fdm_engine.datasets import open_dataset

ROOT = Path(__file__).resolve().parents[1]


run = run_fdm


def test_make_then_info_as_a_subprocess(tmp_path):
    """The real entry point, once: `python -m cli.main data make ...` then `data info`."""
    out = tmp_path / "balls"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make = [sys.executable, "-m", "cli.main", "data", "make", "bouncing-balls", "--out", str(out),
            "--num-videos", "3", "--length", "12", "--size", "16", "--seed", "5"]
    r = subprocess.run(make, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 train + 1 test videos of bouncing-balls" in r.stdout
    ds = open_dataset("bouncing-balls", out, "train")
    assert len(ds) == 3 and ds.read(0).shape == (12, 16, 16, 3)
    info = [sys.executable, "-m", "cli.main", "data", "info", str(tmp_path / "missing")]
    r = subprocess.run(info, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and "missing" in r.stderr


def test_a_stopped_make_says_so_and_leaves_no_folder(tmp_path):
    """SIGTERM (as `timeout` sends) mid-way: exit 130, one line saying OUT was not written, and
    no OUT nor partial folder (Ctrl-C takes the same path: tests/test_datasets_procedural.py)."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make = [sys.executable, "-m", "cli.main", "data", "make", "bouncing-balls", "--out", str(tmp_path / "big"),
            "--num-videos", "100000", "--length", "8", "--size", "16", "-q"]
    p = subprocess.Popen(make, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big.partial-*/train/*.npy")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is writing videos
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert f"interrupted: {tmp_path / 'big'} not written" in err
    assert sorted(tmp_path.iterdir()) == []


def test_info_summarises_and_validates(tmp_path, capsys):
    out = tmp_path / "world"
    code, _, _ = run(capsys, "data", "make", "revisit-world", "--out", str(out), "--num-videos", "2",
                     "--num-test", "1", "--length", "8", "--size", "16", "--format", "carla", "-q")
    assert code == 0
    code, text, _ = run(capsys, "data", "info", str(out), "-q")
    assert code == 0
    assert "revisit-world (carla layout)" in text
    assert "train: 2 videos, 8 frames, 16x16x3" in text and "test: 1 video, 8 frames" in text
    assert "validated: 3 videos decoded, 0 bad" in text
    code, _, _ = run(capsys, "data", "make", "revisit-world", "--out", str(tmp_path / "mp4"), "--num-videos", "1",
                     "--num-test", "1", "--length", "8", "--size", "16", "--format", "mp4", "-q")
    code, text, _ = run(capsys, "data", "info", str(tmp_path / "mp4"), "-q")
    assert code == 0 and "revisit-world (mp4 layout, read as a video folder)" in text  # as --format named it
    code, text, _ = run(capsys, "data", "info", str(out), "--json", "-q", "--split", "test")
    summary = json.loads(text)
    assert list(summary["splits"]) == ["test"] and summary["splits"]["test"]["num_videos"] == 1


def test_info_on_bad_data_names_the_file_and_skip_bad_warns(tmp_path, capsys):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        for n in range(2):
            np.save(tmp_path / split / f"{n}.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(tmp_path / "train" / "1.npy", np.zeros((4, 8, 8, 3), np.float64))
    code, _, err = run(capsys, "data", "info", str(tmp_path), "--dataset", "minerl", "-q")
    assert code == 2 and err.count("\n") == 1 and "train/1.npy" in err and "uint8" in err
    code, text, err = run(capsys, "data", "info", str(tmp_path), "--dataset", "minerl", "-q", "--skip-bad")
    assert code == 0
    assert "warning: skipping" in err and "train/1.npy" in err
    assert "train: 1 video" in text
    for f in (tmp_path / "test").iterdir():
        f.unlink()  # an empty split is an error even with --skip-bad (no file to skip)
    code, _, err = run(capsys, "data", "info", str(tmp_path), "--dataset", "minerl", "-q", "--skip-bad")
    assert code == 2 and "test: no N.npy videos in split 'test'" in err


@pytest.mark.parametrize("argv, message", [
    (["data", "make", "nope", "--out", "X"], "unknown procedural dataset 'nope'"),
    (["data", "make", "moving-digits", "--out", "X", "--length", "0"], "--length must be >= 1"),
    (["data", "make", "moving-digits", "--out", "X", "--param", "oops"], "--param 'oops': expected KEY=VALUE"),
    (["data", "info"], "give a DIRECTORY or --dataset NAME"),
    (["data", "info", "--dataset", "minerl"], "datasets/minerl"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FDM_DATA_DIR", raising=False)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_help_everywhere(capsys):
    for sub in ([], ["make"], ["info"], ["list"]):
        code, text, _ = run(capsys, "data", *sub, "--help")
        assert code == 0 and "Usage:" in text
    code, text, _ = run(capsys, "data", "list")
    assert code == 0 and "revisit-world" in text and "carla_no_traffic" in text
