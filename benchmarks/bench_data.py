"""Data loading speed: seconds per training batch from each on-disk layout, vs a training step.

    python benchmarks/bench_data.py [--quick] [--json] [--workers N]

Each row makes a bouncing-balls dataset in a temporary folder (`make_dataset`, timed too), opens
it by name, and times a torch DataLoader over `windows(20, train=True)`: batches of 8 random
20-frame clips, float [8, 20, 3, S, S] in [-1, 1]. Reported: the median seconds per batch after
one warm-up batch, in the main process (workers=0) and with --workers loader processes.

Layouts: npy (minerl/mazes: memory-mapped, only the window is read), carla (video_{i}.pt,
memory-mapped torch tensors), mp4 (a video folder: each clip decodes its video up to the window).
The full run adds a CARLA-sized row (128 px, 300-frame videos) to show windows stay cheap when
videos are long. For scale, "tiny_step_s" is one forward + backward of the tiny FDM preset on a
batch of 8 x 10 frames at 32 px on this machine (the model sees K = 10 of the clip's frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from fdm_engine.datasets import make_dataset, open_dataset  # noqa: E402

BATCH, CLIP = 8, 20


def rows(quick: bool) -> list[dict]:
    """(label, layout, videos, frames per video, size) of each measured dataset."""
    n, length = (16, 40) if quick else (64, 100)
    out = [dict(label=f"{layout}-32px", layout=layout, videos=n, length=length, size=32)
           for layout in ("npy", "carla", "mp4")]
    if not quick:
        out.append(dict(label="carla-128px-300f", layout="carla", videos=8, length=300, size=128))
    return out


def time_loader(ds, workers: int, batches: int) -> float:
    """Median seconds per batch of a shuffled DataLoader over random training windows."""
    clips = ds.windows(CLIP, train=True, seed=0)
    loader = DataLoader(clips, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    times, epoch = [], 0
    while len(times) < batches + 1:  # +1: the first batch (worker start-up) is not counted
        clips.set_epoch(epoch)
        it = iter(loader)
        while len(times) < batches + 1:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            times.append(time.perf_counter() - t0)
            assert batch.shape == (BATCH, CLIP, ds.channels, ds.image_size, ds.image_size)
        epoch += 1
    return statistics.median(times[1:])


def tiny_step_seconds(repeats: int = 3) -> float | None:
    """One forward + backward of the tiny FDM preset on [8, 10, 3, 32, 32]; None if unavailable."""
    try:
        from fdm_engine.models.fdm_unet import FDMUNet, fdm_preset

        config = fdm_preset("tiny")
        model = FDMUNet(config)
        k = config.max_frames
        x = torch.randn(BATCH, k, config.channels, config.image_size, config.image_size)
        idx = torch.arange(k).expand(BATCH, k)
        observed = torch.zeros(BATCH, k, dtype=torch.bool)
        observed[:, : k // 2] = True
        levels = torch.where(observed, 0.0, 500.0)

        def step():
            model.zero_grad(set_to_none=True)
            loss = (model(x, idx, levels, observed) - x).square().mean()
            loss.backward()

        step()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    except Exception as e:  # the model is another module's; the loader numbers stand alone
        print(f"note: tiny training step not measured ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller datasets, fewer batches.")
    parser.add_argument("--json", action="store_true", help="Print results as JSON.")
    parser.add_argument("--workers", type=int, default=2, help="Loader processes for the second column.")
    args = parser.parse_args()
    batches = 5 if args.quick else 20

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        for row in rows(args.quick):
            t0 = time.perf_counter()
            root = make_dataset("bouncing-balls", Path(tmp) / row["label"], row["videos"], row["length"],
                                row["size"], seed=0, format=row["layout"], num_test=1)
            make_s = (time.perf_counter() - t0) / (row["videos"] + 1)
            ds = open_dataset("bouncing-balls", root, "train")
            result = dict(row, make_s_per_video=make_s, batch=BATCH, clip=CLIP,
                          batch_s_workers0=time_loader(ds, 0, batches),
                          **{f"batch_s_workers{args.workers}": time_loader(ds, args.workers, batches)})
            results.append(result)
            if not args.json:
                print(f"{row['label']:<18} make {make_s * 1e3:7.1f} ms/video   batch [8, 20, 3, {row['size']}, "
                      f"{row['size']}]: {result['batch_s_workers0'] * 1e3:7.1f} ms (workers 0) "
                      f"{result[f'batch_s_workers{args.workers}'] * 1e3:7.1f} ms (workers {args.workers})",
                      flush=True)
    step = tiny_step_seconds(repeats=1 if args.quick else 3)
    if args.json:
        print(json.dumps({"rows": results, "tiny_step_s": step, "torch_threads": torch.get_num_threads()}, indent=2))
    elif step is not None:
        print(f"tiny FDM training step [8, 10, 3, 32, 32] forward + backward: {step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
