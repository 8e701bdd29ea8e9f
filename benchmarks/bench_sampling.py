"""Sampling throughput per scheme with the tiny FDM denoiser: frames/sec, NFE, rounds, batching on
vs off at equal NFE, and the engine's overhead (wall time minus time inside the network).

    python benchmarks/bench_sampling.py [--quick] [--json] [--length 300] [--steps N] [--videos V]

Batching "on" uses the batch size that measured fastest per job for this model on this machine
(printed as "chosen_batch_size"); "off" runs one job per network call. Weights are random
(speed does not depend on them). Overhead = wall_s - network_s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fdm_engine.cpu_memory import retain_freed_memory  # noqa: E402
from fdm_engine.diffusion import NoiseSchedule  # noqa: E402
from fdm_engine.executor import Executor, SamplingState  # noqa: E402
from fdm_engine.models.fdm_unet import FDMUNet, fdm_preset  # noqa: E402
from fdm_engine.samplers import make_sampler  # noqa: E402
from sampling_schemes import AdaptivePlanner, get_scheme, plan  # noqa: E402


def tiny_model() -> FDMUNet:
    torch.manual_seed(0)
    model = FDMUNet(fdm_preset("tiny")).eval()
    with torch.no_grad():  # live relative encodings, as in a trained model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@torch.no_grad()
def per_job_seconds(model, batch: int, frames: int, repeats: int = 3) -> float:
    c, s = model.channels, model.image_size
    x = torch.randn(batch, frames, c, s, s)
    idx = torch.arange(frames).expand(batch, -1)
    levels = torch.full((batch, frames), 500.0)
    observed = torch.zeros(batch, frames, dtype=torch.bool)
    observed[:, : frames // 2] = True
    model(x, idx, levels, observed)
    start = time.perf_counter()
    for _ in range(repeats):
        model(x, idx, levels, observed)
    return (time.perf_counter() - start) / repeats / batch


def choose_batch_size(model, candidates=(1, 2, 4, 8)) -> tuple[int, dict[int, float]]:
    """The batch size with the lowest measured seconds per job."""
    times = {b: per_job_seconds(model, b, model.max_frames) for b in candidates}
    return min(times, key=times.get), times


def run_scheme(model, scheme: str, length: int, n_obs: int, steps: int, videos: int, batch: int) -> dict:
    k = model.max_frames
    schedule = NoiseSchedule()
    ex = Executor(model, make_sampler("dpm++2m", schedule, steps, "logsnr"), batch_size=batch, seed=0)
    given = torch.rand(videos, n_obs, model.channels, model.image_size, model.image_size) * 2 - 1
    state = SamplingState.start(given, length)
    start = time.perf_counter()
    if get_scheme(scheme).adaptive:
        ex.run_adaptive(AdaptivePlanner(scheme, length, n_obs, k, batch_size=videos), state)
    else:
        ex.run(plan(scheme, length, n_obs, k), state)
    wall = time.perf_counter() - start
    return {"scheme": scheme, "sampler": "dpm++2m", "steps": steps, "length": length, "videos": videos,
            "batch_size": batch, "batching": batch > 1, "nfe": state.nfe, "rounds": state.rounds,
            "network_calls": state.calls, "wall_s": round(wall, 3), "network_s": round(state.network_s, 3),
            "overhead_frac": round((wall - state.network_s) / wall, 4),
            "frames_per_sec": round(videos * (length - n_obs) / wall, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer schemes and steps (about a minute or two)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--n-obs", type=int, default=36)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per job [quick: 1, full: 10]")
    ap.add_argument("--videos", type=int, default=2)
    args = ap.parse_args(argv)
    retain_freed_memory()  # as the fdm command does
    steps = args.steps or (1 if args.quick else 10)
    schemes = (["autoreg", "hierarchy-2", "hierarchy-2-parallel"] if args.quick else
               ["autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-2-parallel", "adaptive-hierarchy-2"])
    model = tiny_model()
    batch, per_job = choose_batch_size(model)
    runs = []
    for scheme in schemes:
        for b in sorted({1, batch}):
            runs.append(run_scheme(model, scheme, args.length, args.n_obs, steps, args.videos, b))
            if not args.json:
                r = runs[-1]
                print(f"{r['scheme']:22s} batch {r['batch_size']}: {r['frames_per_sec']:7.2f} frames/s  "
                      f"nfe {r['nfe']:5d}  rounds {r['rounds']:4d}  calls {r['network_calls']:5d}  "
                      f"wall {r['wall_s']:7.2f}s  overhead {100 * r['overhead_frac']:.1f}%", flush=True)
    report = {"model": "fdm tiny", "threads": torch.get_num_threads(), "chosen_batch_size": batch,
              "seconds_per_job_by_batch": {str(b): round(t, 4) for b, t in per_job.items()}, "runs": runs}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"per-job seconds by batch size: {report['seconds_per_job_by_batch']} -> batch {batch}")


if __name__ == "__main__":
    main()
