"""Training processes killed and resumed, and torchrun: run as real subprocesses.

- SIGKILL mid-run, then the same command again: the loss trajectory (every step) and the final
  weights equal those of an uninterrupted run, bit for bit (CPU, same seed).
- SIGTERM (or Ctrl-C): the current step is checkpointed before exiting, and resuming is exact.
- SIGKILL while a checkpoint is being written (the weights file or its training-state companion):
  the previous checkpoint stays the newest complete one, loads, and the run resumes from it.
- `torchrun --nproc_per_node 2` (gloo, CPU): both ranks end with identical parameters, equal to
  rank 0's checkpoint; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fdm_engine.checkpoint import load_checkpoint
from fdm_engine.datasets import make_dataset
from trainers.checkpoints import list_checkpoints, load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
STEPS = 30


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data") / "balls"
    make_dataset("bouncing-balls", root, num_videos=3, num_test=1, length=16, size=8, seed=1)
    return root


def train_args(data, run_dir, steps=STEPS) -> list[str]:
    return ["train", "--dataset", "bouncing-balls", "--data-dir", str(data), "--run-dir", str(run_dir),
            "--preset", "tiny", "--model-option", "image_size=8", "--model-option", "max_frames=6",
            "--clip-length", "12", "--batch-size", "2", "--steps", str(steps), "--save-every", "2",
            "--log-every", "1", "--sample-every", "0", "--keep-checkpoints", "0", "--seed", "3", "--quiet"]


def fdm(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, **kw)


def losses(run_dir) -> list[tuple[int, float]]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def weights(path) -> tuple[dict, dict]:
    return (load_checkpoint(path, use_ema=False).model.state_dict(), load_checkpoint(path).model.state_dict())


def assert_same_state(a, b) -> None:
    for da, db in zip(a, b):
        assert da.keys() == db.keys()
        assert all(torch.equal(da[k], db[k]) for k in da), "weights differ"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run: its per-step losses and final weights."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = fdm(train_args(data, run_dir))
    assert done.returncode == 0, done.stderr
    final = run_dir / "checkpoints" / f"step_{STEPS:07d}.safetensors"
    return losses(run_dir), weights(final)


def wait_for(predicate, proc, timeout=300.0) -> None:
    start = time.monotonic()
    while not predicate():
        assert proc.poll() is None, f"training ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() - start < timeout, "timed out waiting for the training process"
        time.sleep(0.02)


@pytest.mark.slow  # ~34 s with its reference run; in-process resume exactness stays in the fast set
def test_sigkill_and_resume_continue_the_exact_loss_trajectory(data, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *train_args(data, run_dir)], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(s >= 6 for s, _ in list_checkpoints(run_dir)), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = max(s for s, _ in losses(run_dir))
    assert killed_at < STEPS, "the process must be killed mid-run"

    resumed = fdm(train_args(data, run_dir))
    assert resumed.returncode == 0, resumed.stderr
    ref_losses, ref_weights = reference
    assert losses(run_dir) == ref_losses, "resumed trajectory differs from the uninterrupted one"
    assert_same_state(weights(run_dir / "checkpoints" / f"step_{STEPS:07d}.safetensors"), ref_weights)


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_then_resumes_exactly(data, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *train_args(data, run_dir)], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(s >= 4 for s, _ in list_checkpoints(run_dir)), proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped_at = max(s for s, _ in losses(run_dir))
    assert stopped_at < STEPS
    assert max(s for s, _ in list_checkpoints(run_dir)) == stopped_at, "the stop step is checkpointed"
    resumed = fdm(train_args(data, run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir) == reference[0]


DYING_WRITER = """
import os, signal, sys
target, argv = sys.argv[1], sys.argv[2:]
calls = []

def dying(write):
    def wrapped(obj, path, *args, **kwargs):
        calls.append(path)
        write(obj, path, *args, **kwargs)
        if len(calls) == 2:  # the second checkpoint: cut the file in half, then die mid-write
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return wrapped

if target == "weights":
    import fdm_engine.checkpoint as c
    c._WRITERS[".safetensors"] = dying(c._WRITERS[".safetensors"])
else:
    import torch
    torch.save = dying(torch.save)
from cli.main import main
main(argv)
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["weights", "companion"])
def test_kill_during_checkpoint_write_leaves_the_previous_one(data, reference, tmp_path, target):
    run_dir = tmp_path / "run"
    args = train_args(data, run_dir, steps=6)
    died = subprocess.run([sys.executable, "-c", DYING_WRITER, target, *args], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert [s for s, _ in list_checkpoints(run_dir)] == [2], "the half-written step 4 must not be listed"
    path = run_dir / "checkpoints" / "step_0000002.safetensors"
    assert load_checkpoint(path).extra["step"] == 2
    assert load_training_checkpoint(path, "cpu")["companion"]["step"] == 2

    resumed = fdm(args)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir) == reference[0][:6], "resumed from step 2 on the reference trajectory"


DDP_SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
from trainers import TrainConfig, train
result = train(TrainConfig.from_json(sys.argv[1]), progress=False)
rank = int(os.environ["RANK"])
torch.save({"model": result.model.state_dict(), "ema": result.ema_model.state_dict()},
           os.path.join(sys.argv[2], f"rank{rank}.pt"))
"""


@pytest.mark.slow
def test_torchrun_two_ranks_on_gloo_hold_identical_parameters(data, tmp_path):
    from trainers import TrainConfig

    run_dir = tmp_path / "run"
    cfg = TrainConfig(dataset="bouncing-balls", data_dir=str(data), preset="tiny", run_dir=str(run_dir), steps=3,
                      batch_size=4, clip_length=12, save_every=3, log_every=1, sample_every=0,
                      model_config={"image_size": 8, "max_frames": 6})
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), cfg.to_json(), str(tmp_path)], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "ema"):
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), f"ranks' {part} weights differ"
    assert_same_state(weights(run_dir / "checkpoints" / "step_0000003.safetensors"), (r0["model"], r0["ema"]))
    assert [s for s, _ in losses(run_dir)] == [1, 2, 3], "one metrics writer (rank 0)"
    first = torch.load(run_dir / "checkpoints" / "step_0000003.state.pt", weights_only=True)
    assert len(first["rng"]) == 2, "both ranks' RNG states are saved"
