"""Sampling runs at scale: wall time, network seconds, overhead, peak memory and state bytes.

    python benchmarks/bench_sampling.py [--quick] [--json] [--only NAME,...]

Each row is one `fdm sample` run (the real pipeline: streaming executor, journal, writer) in its
own process, so its peak RSS is its own. Models: the 32 px 3-channel GP oracle (1 step) and the
tiny FDM (random weights; speed does not depend on them). Columns: wall_s, network_s (inside the
network), overhead = (wall - network) / wall, peak_rss_mb, state bytes written per round, and
the same overhead in CPU seconds (cpu_overhead_frac: the process's CPU time outside the
network's, over its CPU time; waiting for a core on a shared machine drops out of it), and
seconds per generated frame (wall, and CPU seconds of all the run's threads: on a shared machine
the wall time of two rows minutes apart can differ 2x for the same work), noise_ahead_s: the CPU
time of the next round's batches laid out (noise drawn) on the helper thread while the network runs
(overlapped; on a machine with no free core it slows the network's wall time instead), and
thread_overhead_frac: the sampling thread's CPU seconds outside the network over its CPU seconds
(sampling_thread_cpu_s), the overhead left on the critical path once the helper and background
threads (batch layout, journal, outputs) find a free core: what the wall figure approaches on a
quiet machine with a core to spare. The full set covers V in {1, 8, 32, 64} x T in {300, 1000, 4000};
--quick keeps the rows the targets need (docs/sampling.md):

- overhead <= 5 % at V=32, T=1000, oracle, 1 step (batch 32, 32 videos in flight);
- peak RSS at V=64 <= 1.25 x at V=8, same settings (T=300, 8 videos in flight);
- seconds per frame at T=4000 within 1.2 x of T=300 (V=8, 8 in flight);

and one 10-step row (V=8, T=300), where the sampler's own arithmetic at every step shows.

network_s is the time inside the denoiser's forward (for the oracle: its exact posterior, float64
solves included); everything else (noise, the sampler's arithmetic, the batch, the journal, the
outputs) is overhead. Output: npz only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE = "oracle:ou:lengthscale=8,size=32,channels=3"

ROW = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from fdm_engine.cpu_memory import retain_freed_memory
from fdm_engine.sample_config import SampleConfig
from fdm_engine.sample_run import run_sampling
retain_freed_memory()  # as the fdm command does
cfg = SampleConfig.from_json({cfg!r})
before = resource.getrusage(resource.RUSAGE_SELF)
s = run_sampling(cfg, {out!r}, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF)
made = cfg.num_videos * (cfg.length - cfg.n_obs)
print(json.dumps({{"wall_s": s["wall_s"], "network_s": s["network_s"], "rounds": s["rounds"], "nfe": s["nfe"],
                  "network_calls": s["network_calls"], "state_bytes": s["state_bytes_written"],
                  "noise_ahead_s": s["noise_ahead_s"], "network_cpu_s": s["network_cpu_s"],
                  "sampling_thread_cpu_s": s["sampling_thread_cpu_s"],
                  "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                  "frames": made, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def tiny_fdm_checkpoint(folder: Path) -> str:
    """A tiny FDM checkpoint with random weights (written once per benchmark run)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, fdm_preset

    torch.manual_seed(0)
    model = FDMUNet(fdm_preset("tiny")).eval()
    with torch.no_grad():  # live relative encodings, as in a trained model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = folder / "tiny_fdm.safetensors"
    save_checkpoint(path, model, DiffusionConfig())
    return str(path)


def rows(quick: bool, fdm: str | None) -> list[dict]:
    """(name, model, videos, length, steps, scheme) of each run."""
    out = []
    oracle_v = (1, 8, 32, 64)
    oracle_t = (300, 1000, 4000)
    for t in oracle_t:
        for v in oracle_v:
            if quick and (t, v) not in ((1000, 32), (300, 8), (300, 64), (4000, 8)):
                continue
            # in flight: the batch size (enough to fill a batch of 32 autoreg jobs), capped at 8 for
            # the memory rows, which compare V=8 and V=64 at the same settings
            out.append(dict(name=f"oracle V={v} T={t}", model=ORACLE, videos=v, length=t, steps=1,
                            batch=32, in_flight=8 if v in (8, 64) else 0, max_frames=20, n_obs=36))
    # the sampler's arithmetic at every step (dpm++2m, the default): 1 step shows little of it
    out.append(dict(name="oracle V=8 T=300 10 steps", model=ORACLE, videos=8, length=300, steps=10, batch=32,
                    in_flight=8, max_frames=20, n_obs=36))
    if fdm:
        for t in ((300,) if quick else oracle_t):
            for v in ((1,) if quick else (1, 8)):
                out.append(dict(name=f"tiny-fdm V={v} T={t}", model=fdm, videos=v, length=t, steps=1, batch=2,
                                in_flight=0, max_frames=None, n_obs=0))  # K: the model's (10); no data to observe
    return out


def run_row(row: dict, tmp: Path) -> dict:
    from fdm_engine.sample_config import SampleConfig

    cfg = SampleConfig(model=row["model"], scheme="autoreg", n_obs=row["n_obs"], length=row["length"],
                       max_frames=row["max_frames"],
                       steps=row["steps"], num_videos=row["videos"], batch_size=row["batch"],
                       videos_in_flight=row["in_flight"], formats=("npz",), seed=0)
    out = tmp / row["name"].replace(" ", "_").replace("=", "")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", ROW.format(root=str(ROOT), cfg=cfg.to_json(), out=str(out))],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        return {"name": row["name"], "error": r.stderr.strip().splitlines()[-1]}
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(name=row["name"], videos=row["videos"], length=row["length"], steps=row["steps"],
               batch_size=row["batch"], model="oracle 32px 3ch" if row["model"] == ORACLE else "tiny fdm",
               overhead_frac=round((res["wall_s"] - res["network_s"]) / res["wall_s"], 4),
               # the same in CPU seconds (all threads; the run's start-up included): what a quiet
               # machine's wall figure would approach, since waiting for a core drops out
               cpu_overhead_frac=round((res["cpu_s"] - res["network_cpu_s"]) / res["cpu_s"], 4),
               thread_overhead_frac=round((res["sampling_thread_cpu_s"] - res["network_cpu_s"])
                                          / res["sampling_thread_cpu_s"], 4),
               state_bytes_per_round=round(res["state_bytes"] / max(res["rounds"], 1)),
               s_per_frame=res["wall_s"] / res["frames"], cpu_s_per_frame=res["cpu_s"] / res["frames"])
    return res


def targets(runs: list[dict]) -> dict:
    by = {r["name"]: r for r in runs}
    out = {}
    if "oracle V=32 T=1000" in by:
        out["overhead at V=32 T=1000 (<= 0.05)"] = by["oracle V=32 T=1000"]["overhead_frac"]
        out["CPU-time overhead at V=32 T=1000"] = by["oracle V=32 T=1000"]["cpu_overhead_frac"]
        out["sampling-thread overhead at V=32 T=1000"] = by["oracle V=32 T=1000"]["thread_overhead_frac"]
    for t in (300, 1000, 4000):
        if f"oracle V=64 T={t}" in by and f"oracle V=8 T={t}" in by:
            out[f"peak RSS V=64 / V=8, T={t} (<= 1.25)"] = round(by[f"oracle V=64 T={t}"]["peak_rss_mb"]
                                                                / by[f"oracle V=8 T={t}"]["peak_rss_mb"], 3)
    if "oracle V=8 T=4000" in by and "oracle V=8 T=300" in by:
        long, short = by["oracle V=8 T=4000"], by["oracle V=8 T=300"]
        out["s/frame T=4000 / T=300 (<= 1.2)"] = round(long["s_per_frame"] / short["s_per_frame"], 3)
        # CPU seconds (all threads) per frame: what the work costs, whatever else the machine runs
        out["CPU s/frame T=4000 / T=300"] = round(long["cpu_s_per_frame"] / short["cpu_s_per_frame"], 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the rows the targets need, tiny FDM at V=1 T=300")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--only", default=None, help="comma-separated row names (e.g. 'oracle V=32 T=1000')")
    ap.add_argument("--no-fdm", action="store_true", help="oracle rows only")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fdm = None if args.no_fdm else tiny_fdm_checkpoint(tmp)
        todo = rows(args.quick, fdm)
        if args.only:
            wanted = {n.strip() for n in args.only.split(",")}
            todo = [r for r in todo if r["name"] in wanted]
        runs = []
        for row in todo:
            runs.append(run_row(row, tmp))
            if not args.json and "error" in runs[-1]:
                print(f"{row['name']:24s} failed: {runs[-1]['error']}", flush=True)
            elif not args.json:
                r = runs[-1]
                print(f"{r['name']:24s} wall {r['wall_s']:8.2f}s  network {r['network_s']:8.2f}s  overhead "
                      f"{100 * r['overhead_frac']:5.1f}%  peak {r['peak_rss_mb']:7.1f} MB  state "
                      f"{r['state_bytes_per_round'] / 1e6:7.3f} MB/round  {1e3 * r['s_per_frame']:.3f} ms/frame",
                      flush=True)
    ok = [r for r in runs if "error" not in r]
    report = {"threads": torch.get_num_threads(), "scheme": "autoreg", "runs": ok,
              "failed": [r for r in runs if "error" in r], "targets": targets(ok)}
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report["targets"].items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
