"""Training speed of every model at its tiny preset: steps/s, samples/s, peak memory, loader time.

    python benchmarks/bench_training.py [--quick] [--json] [--models fdm,vdm,...] [--threads N]

Each model runs in a fresh subprocess (so peak memory is its own) through the real training loop
(`trainers.loop`: build, then `train_step`, the step `fdm train` runs: data, masks, forward,
backward, clipping, AdamW, EMA) on a procedural bouncing-balls dataset at the preset's 32 px, with
the preset's batch size and frames (FDM: K = 10 slots of 40-frame clips; others: 10-frame clips).

Reported per model:
- step_s: median seconds per optimiser step over the timed steps (after warm-up steps);
  steps_per_s = 1 / step_s and samples_per_s = batch_size / step_s;
- loader_s: median seconds to fetch one batch from the data stream (the loader's share of a step,
  measured separately on the same stream, main-process loading as on CPU);
- peak_rss_mb: the subprocess's peak resident memory (Linux ru_maxrss), model + optimiser + EMA +
  activations + Python and torch themselves; peak_cuda_mb on CUDA (max_memory_allocated);
- params: parameter count.
--quick: 2 warm-up + 3 timed steps per model (about a minute on 2 busy cores); default 3 + 10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

MODELS = ("fdm", "vdm", "ramvid", "ssm")


def make_data(root: Path) -> Path:
    from fdm_engine.datasets import make_dataset

    return make_dataset("bouncing-balls", root / "balls", num_videos=16, num_test=1, length=48, size=32, seed=0)


def measure(model: str, data: Path, warmup: int, timed: int) -> dict:
    """One model's row (runs inside the subprocess)."""
    import resource

    import torch

    from trainers import TrainConfig
    from trainers.distributed import DistEnv, default_device
    from trainers.loop import build, restore, train_step
    from trainers.resolve import resolve

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = resolve(TrainConfig(dataset="bouncing-balls", data_dir=str(data), model=model, preset="tiny",
                                  run_dir=run_dir, sample_every=0))
        device = default_device(None, DistEnv())
        run = build(cfg, DistEnv(), device, log=lambda message: None)
        restore(run)
        loader = []
        for _ in range(timed):
            t0 = time.perf_counter()
            run.data.next()
            loader.append(time.perf_counter() - t0)
        steps = []
        for i in range(warmup + timed):
            t0 = time.perf_counter()
            train_step(run)
            if device.type == "cuda":
                torch.cuda.synchronize()
            run.step += 1
            if i >= warmup:
                steps.append(time.perf_counter() - t0)
        step_s = statistics.median(steps)
        row = {
            "model": model, "device": str(device), "params": sum(p.numel() for p in run.model.parameters()),
            "batch_size": cfg.batch_size, "frames": run.trainer.frames, "clip_length": run.trainer.clip_length(),
            "image_size": run.model.image_size, "step_s": step_s, "steps_per_s": 1 / step_s,
            "samples_per_s": cfg.batch_size / step_s, "loader_s": statistics.median(loader),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "warmup": warmup, "timed": timed,
        }
        if device.type == "cuda":
            row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return row


def run_row(model: str, data: Path, args) -> dict:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, __file__, "--row", model, "--data", str(data), "--warmup", str(args.warmup),
           "--timed", str(args.timed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"model": model, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    head = f"{'model':7s} {'params':>8s} {'batch':>5s} {'K/T':>7s} {'step s':>8s} {'steps/s':>8s} " \
           f"{'samples/s':>9s} {'loader s':>9s} {'peak MB':>8s}"
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['model']:7s} failed: {r['error']}")
            continue
        shape = f"{r['frames']}/{r['clip_length']}"
        print(f"{r['model']:7s} {r['params'] / 1e6:7.2f}M {r['batch_size']:5d} {shape:>7s} {r['step_s']:8.3f} "
              f"{r['steps_per_s']:8.2f} {r['samples_per_s']:9.2f} {r['loader_s']:9.4f} {r['peak_rss_mb']:8.0f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 warm-up + 3 timed steps per model")
    p.add_argument("--json", action="store_true", help='print {"runs": [...]} as JSON')
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of fdm,vdm,ramvid,ssm")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 on a busy machine)")
    p.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--timed", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from fdm_engine.cpu_memory import retain_freed_memory

    retain_freed_memory()  # as the fdm command does
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    args.timed = args.timed if args.timed is not None else (3 if args.quick else 10)
    if args.row:  # inside a subprocess: one model, one JSON line
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.row, Path(args.data), args.warmup, args.timed)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp))
        rows = [run_row(m, data, args) for m in models]
    if args.json:
        print(json.dumps({"runs": rows}, indent=1))
    else:
        print_table(rows)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
