"""`fdm sample` end to end with the oracle: outputs, resumption after SIGKILL, torchrun, errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest

from cli_helpers import run_fdm
from fdm_engine.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
ORACLE = "oracle:ou:lengthscale=4"


def fdm_process(*args, check=True, timeout=300, **kw):
    """`fdm ARGS` in a process of its own: for what needs one (SIGKILL, torchrun)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                       env=env, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def fdm(capsys, monkeypatch):
    """`fdm ARGS` in this process (a new process costs seconds of imports); `cwd=` runs it there."""
    def run(*args, check=True, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code, out, err = run_fdm(capsys, *args)
        if check:
            assert code == 0, err
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def test_outputs_in_every_format(fdm, tmp_path):
    out = tmp_path / "run"
    fdm("sample", "oracle:periodic:size=16,channels=3", "--scheme", "hierarchy-2", "--n-obs", "6",
        "--length", "48", "--max-frames", "10", "--steps", "5", "--num-videos", "2", "--out", str(out),
        "--format", "mp4,gif,npz,png", "--save-raw", "--quiet")
    for i in range(2):
        for ext in ("mp4", "gif", "npz", "png"):
            assert (out / f"video_{i:04d}.{ext}").stat().st_size > 0
        z = np.load(out / f"video_{i:04d}.npz")
        assert z["frames"].shape == (48, 16, 16, 3) and z["frames"].dtype == np.uint8
        assert z["raw"].shape == (48, 3, 16, 16) and z["raw"].dtype == np.float32
        # frames are the clipped, rounded raw values
        expect = np.clip(np.rint((z["raw"] + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        assert np.array_equal(z["frames"], expect)
    import json
    summary = json.loads((out / "plan.json").read_text())
    assert summary["nfe"] == 2 * 5 * len(summary["jobs"]) and summary["rounds"] >= 1
    assert not list(out.glob("state_rank*.pt")), "a finished run leaves no state behind"


@pytest.mark.slow
def test_killed_run_resumes_to_identical_frames(tmp_path):
    args = ["sample", ORACLE, "--scheme", "autoreg", "--n-obs", "2", "--length", "40", "--max-frames", "6",
            "--sampler", "ddpm", "--steps", "100", "--num-videos", "2", "--format", "npz", "--save-raw", "--quiet"]
    fdm_process(*args, "--out", str(tmp_path / "ref"))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "state_rank0.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more rounds
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (out / "video_0000.npz").exists()
    again = fdm_process(*args, "--out", str(out), check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    fdm_process(*args, "--out", str(out), "--resume")
    for i in range(2):
        a, b = np.load(tmp_path / "ref" / f"video_{i:04d}.npz"), np.load(out / f"video_{i:04d}.npz")
        assert np.array_equal(a["raw"], b["raw"])


@pytest.mark.slow
def test_torchrun_shards_videos_and_matches_one_process(tmp_path):
    args = ["sample", ORACLE, "--scheme", "autoreg", "--n-obs", "4", "--length", "30", "--max-frames", "8",
            "--steps", "5", "--num-videos", "3", "--format", "npz", "--save-raw", "--quiet"]
    fdm_process(*args, "--out", str(tmp_path / "one"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cli.main",
                        *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for i in range(3):
        a = np.load(tmp_path / "one" / f"video_{i:04d}.npz")["raw"]
        b = np.load(tmp_path / "two" / f"video_{i:04d}.npz")["raw"]
        assert np.array_equal(a, b)
    import json
    assert json.loads((tmp_path / "two" / "plan.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("args,needle", [
    (["--n-obs", "40", "--length", "30"], "--n-obs"),
    (["--max-frames", "1"], "--max-frames"),
    (["--max-frames", "8", "--step-size", "8"], "--step-size"),
    (["--scheme", "zigzag"], "zigzag"),
    (["--sampler", "euler-magic"], "euler-magic"),
    (["--spacing", "cubic"], "cubic"),
    (["--format", "mp4,avi"], "avi"),
])
def test_bad_input_is_one_line_and_exit_2(fdm, tmp_path, args, needle):
    r = fdm("sample", ORACLE, "--n-obs", "4", "--length", "20", "--steps", "2", "--out", str(tmp_path),
            "--quiet", *args, check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_conditioning_video_is_checked(fdm, tmp_path):
    short = tmp_path / "short.mp4"
    write_video(short, np.zeros((3, 8, 8, 1), np.uint8))
    r = fdm("sample", ORACLE, "--obs", str(short), "--n-obs", "5", "--length", "20", "--out", str(tmp_path / "o"),
            check=False)
    assert r.returncode == 2 and "fewer than --n-obs 5" in r.stderr
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((10, 16, 16, 1), np.uint8))
    r = fdm("sample", ORACLE, "--obs", str(big), "--n-obs", "5", "--out", str(tmp_path / "o"), check=False)
    assert r.returncode == 2 and "1x16x16" in r.stderr and "1x8x8" in r.stderr


def test_conditioning_from_a_file_is_kept(fdm, tmp_path):
    frames = (np.arange(12 * 8 * 8) % 251).astype(np.uint8).reshape(12, 8, 8, 1)
    np.save(tmp_path / "given.npy", frames)
    out = tmp_path / "o"
    fdm("sample", ORACLE, "--obs", str(tmp_path / "given.npy"), "--n-obs", "5", "--scheme", "autoreg",
        "--max-frames", "6", "--steps", "3", "--out", str(out), "--format", "npz", "--quiet")
    got = np.load(out / "video_0000.npz")["frames"]
    assert got.shape == (12, 8, 8, 1)  # --length defaults to the video's length
    assert np.array_equal(got[:5], frames[:5])


def test_bare_checkpoint_command_uses_the_recorded_dataset(fdm, tmp_path):
    """`fdm sample ckpt.pt --scheme hierarchy-2 --n-obs 36` as the published tool ran it: the test
    split of the checkpoint's dataset from datasets/NAME, --length from its videos."""
    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=16, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=10))
    save_checkpoint(tmp_path / "ckpt.pt", model, DiffusionConfig(), extra={"dataset": "bouncing-balls"})
    fdm("data", "make", "bouncing-balls", "--out", str(tmp_path / "datasets" / "bouncing-balls"),
        "--num-videos", "2", "--length", "44", "--size", "16", "-q")
    fdm("sample", "ckpt.pt", "--scheme", "hierarchy-2", "--n-obs", "36", "--steps", "2", "--quiet",
        cwd=tmp_path)
    frames = np.load(tmp_path / "samples" / "video_0000.npz")["frames"]
    assert frames.shape == (44, 16, 16, 3)
    from fdm_engine.datasets import open_dataset
    truth = open_dataset("bouncing-balls", tmp_path / "datasets" / "bouncing-balls", split="test").read(0)
    assert np.array_equal(frames[:36], truth[:36])


def test_checkpoint_recorded_data_dir_is_the_last_resort(fdm, tmp_path):
    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    data = tmp_path / "elsewhere" / "balls"
    fdm("data", "make", "bouncing-balls", "--out", str(data), "--num-videos", "2", "--length", "20", "--size", "16", "-q")
    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=16, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=10))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, DiffusionConfig(),
                    extra={"dataset": "bouncing-balls", "data_dir": str(data)})
    fdm("sample", "ckpt.safetensors", "--scheme", "autoreg", "--n-obs", "8", "--steps", "1", "--quiet",
        "--format", "npz", cwd=tmp_path)
    assert np.load(tmp_path / "samples" / "video_0000.npz")["frames"].shape == (20, 16, 16, 3)


def test_a_procedural_dataset_without_a_folder_is_generated_the_same_either_way(fdm, tmp_path):
    """A checkpoint whose training folder is gone: its dataset's test split is generated again,
    the same videos `fdm data make` wrote, whether the run names it (--obs) or not, and `fdm eval
    video` finds the same truth."""
    import json

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.datasets import open_dataset
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    made = tmp_path / "gone" / "balls"
    fdm("data", "make", "bouncing-balls", "--out", str(made), "--num-videos", "2", "--num-test", "2",
        "--length", "20", "--size", "16", "--seed", "3", "-q")
    manifest = json.loads((made / "dataset.json").read_text())
    truth = open_dataset("bouncing-balls", made, split="test")
    truth = [truth.read(i) for i in range(2)]
    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=16, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=10))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, DiffusionConfig(),
                    extra={"dataset": "bouncing-balls", "data": manifest, "data_dir": str(tmp_path / "moved")})
    run = tmp_path / "run"
    for out, obs in (("implicit", ()), ("explicit", ("--obs", "bouncing-balls:test:1"))):
        fdm("sample", "ckpt.safetensors", *obs, "--scheme", "autoreg", "--n-obs", "8", "--steps", "1",
            "--num-videos", "1", "--quiet", "--format", "npz", "--out", str(run / out), cwd=tmp_path)
        given = np.load(run / out / "video_0000.npz")["frames"]
        assert given.shape == (20, 16, 16, 3)  # --length from the recorded videos' length
        assert np.array_equal(given[:8], truth[1 if obs else 0][:8])
        report = json.loads(fdm("eval", "video", str(run / out), "--json", cwd=tmp_path).stdout)
        assert min(report["psnr"]["per_frame"][:8]) >= 99  # the given frames are the truth's (capped at 100 dB)
    r = fdm("sample", "ckpt.safetensors", "--obs", "bouncing-balls:test:2", "--n-obs", "8", "--steps", "1",
            "--out", str(run / "past"), check=False, cwd=tmp_path)
    assert r.returncode == 2 and "has 2 videos" in r.stderr  # the recorded split, not an endless one


def test_generated_split_is_what_data_make_writes(tmp_path):
    from fdm_engine.datasets import make_dataset, open_dataset
    from fdm_engine.datasets.procedural.generated import GeneratedSplit

    params = {"num_digits": 2}
    make_dataset("moving-digits", tmp_path / "d", num_videos=2, num_test=1, length=9, size=16, seed=5,
                 params=params)
    for split, n in (("train", 2), ("test", 1)):
        folder = open_dataset("moving-digits", tmp_path / "d", split=split, image_size=8)
        gen = GeneratedSplit("moving-digits", split, length=9, size=16, seed=5, params=params, num_videos=n,
                             image_size=8)
        assert len(gen) == n and gen.video_length == 9 and gen.channels == folder.channels == 1
        for i in range(n):
            assert np.array_equal(gen.read(i), folder.read(i))
            assert torch_equal(gen.clip(i, 4, start=2), folder.clip(i, 4, start=2))
            assert gen.state(i).keys() == folder.state(i).keys()
            assert all(np.array_equal(gen.state(i)[k], folder.state(i)[k]) for k in gen.state(i))


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_a_trained_checkpoint_finds_its_training_data_dir(fdm, tmp_path):
    """Checkpoints written by `fdm train` record the folder in their training config."""
    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    data = tmp_path / "elsewhere" / "balls"
    fdm("data", "make", "bouncing-balls", "--out", str(data), "--num-videos", "2", "--length", "20", "--size", "16", "-q")
    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=16, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=10))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, DiffusionConfig(),
                    extra={"dataset": "bouncing-balls", "train_config": {"data_dir": str(data)}})
    fdm("sample", "ckpt.safetensors", "--scheme", "autoreg", "--n-obs", "8", "--steps", "1", "--quiet",
        "--format", "npz", cwd=tmp_path)
    assert np.load(tmp_path / "samples" / "video_0000.npz")["frames"].shape == (20, 16, 16, 3)
