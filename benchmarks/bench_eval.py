"""Cost of the exact evaluations: scheme score against video length, sampler map against steps,
and the Monte-Carlo check through the executor.

    python benchmarks/bench_eval.py [--quick] [--json] [--threads 1]

The exact scheme score is a covariance propagation (O(T^2) per job, maps cached per job shape);
a sampler map runs the real sampler once on 1 + O + L (+ steps * L when stochastic) columns.
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

from fdm_engine.diffusion import NoiseSchedule  # noqa: E402
from fdm_engine.evaluation import monte_carlo_scheme, sampler_job_map, score_scheme  # noqa: E402
from fdm_engine.models.oracle import GaussianProcessOracle, OracleConfig  # noqa: E402
from fdm_engine.samplers import make_sampler  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Smaller settings (seconds).")
    ap.add_argument("--json", action="store_true", help="Print results as JSON.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on busy cores).")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sched = NoiseSchedule()
    oracle = GaussianProcessOracle(OracleConfig(size=32), sched)
    rows = []
    for T in ((100, 300) if args.quick else (100, 300, 1000)):
        s, r = timed(lambda: score_scheme("hierarchy-2", T, 36, 20, oracle=oracle))
        rows.append({"what": f"exact scheme score, hierarchy-2, T={T}", "seconds": s, "kl": r.kl})
    for name, steps in (("dpm++2m", 25), ("ddim", 100), ("ddpm", 100 if args.quick else 1000)):
        sampler = make_sampler(name, sched, steps, "logsnr")
        s, _ = timed(lambda: sampler_job_map(oracle, sampler, range(10), range(10, 20)))
        rows.append({"what": f"sampler map, {name} {steps} steps, 10 observed + 10 latent", "seconds": s})
    videos = 8 if args.quick else 32
    s, est = timed(lambda: monte_carlo_scheme("hierarchy-2", 300, 36, 20, oracle=oracle,
                                              sampler=make_sampler("dpm++2m", sched, 25), num_videos=videos))
    rows.append({"what": f"Monte-Carlo, hierarchy-2 T=300, {videos} videos x 1024 px", "seconds": s,
                 "kl": est.kl, "se": est.se})
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "results": rows}))
        return
    print(f"torch threads: {torch.get_num_threads()}")
    for r in rows:
        extra = "".join(f"  {k} {v:.4g}" for k, v in r.items() if k not in ("what", "seconds"))
        print(f"{r['what']:<58} {r['seconds']:8.3f} s{extra}")


if __name__ == "__main__":
    main()
