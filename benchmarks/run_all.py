"""Run every benchmark's quick set and write benchmarks/RESULTS.md with the figures and plots.

    python benchmarks/run_all.py [--only sampling,denoiser] [--out benchmarks/RESULTS.md]

Each benchmark runs as `python benchmarks/bench_NAME.py --quick --json` in its own process; its
JSON goes to benchmarks/results/NAME.json (with NAME.meta.json: when, how long, the load), its
plots to benchmarks/results/NAME_*.png, and a table per benchmark into RESULTS.md. A benchmark
that fails is reported as failed; the others still run. With --only, the benchmarks not rerun
keep their sections from their last saved run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ("sampling", "precision", "denoiser", "training", "data", "eval", "temporal_layers")


def load() -> str:
    """The 1-minute load average against the CPUs: how shared the machine was."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def run(name: str, extra: list[str]) -> tuple[dict | None, str, float]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), "--quick", "--json", *extra],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    report = None
    for text in ((r.stdout.strip().splitlines() or [""])[-1], r.stdout):  # one JSON line, or all (indented)
        try:
            report = json.loads(text)
            break
        except ValueError:
            pass
    if not r.returncode:
        return report, "" if report is not None else "its output is not JSON", seconds
    # A benchmark that reports failed rows in its JSON (and exits 1) keeps the rows that ran; the
    # error names the rows that failed and why, else it is the last line of stderr.
    rows = [x for v in (report or {}).values() if isinstance(v, list) for x in v if isinstance(x, dict)]
    failed = [f"{x.get('model') or x.get('name')}: {x['error']}" for x in rows if "error" in x]
    error = "; ".join(failed) or (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return report, error, seconds


def scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(rows: list[dict]) -> list[str]:
    cols = [c for c in dict.fromkeys(k for r in rows for k, v in r.items() if scalar(v))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def sampling_plots(report: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oracle = [r for r in report["runs"] if r["model"].startswith("oracle")]
    made = []
    for x_key, y_key, fixed_key, label in (("videos", "overhead_frac", "length", "overhead (wall - network) / wall"),
                                           ("videos", "peak_rss_mb", "length", "peak RSS (MB)"),
                                           ("length", "s_per_frame", "videos", "seconds per frame")):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for fixed in sorted({r[fixed_key] for r in oracle}):
            pts = sorted((r[x_key], r[y_key]) for r in oracle if r[fixed_key] == fixed)
            if len(pts) > 1:
                ax.plot(*zip(*pts), marker="o", label=f"{fixed_key[0].upper()}={fixed}")
        ax.set_xscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.set_title(f"oracle 32 px 3 ch, 1 step: {label}", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=8)
            path = folder / f"sampling_{y_key}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            made.append(path.name)
        plt.close(fig)
    return made


def section(name: str, report: dict | None, meta: dict, folder: Path, rerun: bool) -> list[str]:
    """One benchmark's section of RESULTS.md: its tables (and the sampling plots)."""
    earlier = "" if rerun else f"; from the run of {meta['when']}"
    lines = [f"## bench_{name} ({meta['seconds']:.0f} s; load average {meta['before']} before, "
             f"{meta['after']} after{earlier})", ""]
    if report is None:
        return lines + [f"failed: `{meta['error']}`", ""]
    if meta.get("error"):
        lines += [f"partly failed: `{meta['error']}`", ""]
    top = {k: v for k, v in report.items() if scalar(v)}
    if top:
        lines += [", ".join(f"{k}: {fmt(v)}" for k, v in top.items()), ""]
    for key, value in report.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            lines += [f"{key}:", "", *table(value), ""]
        elif isinstance(value, dict) and value and all(scalar(v) for v in value.values()):
            lines += [f"{key}:", "", *table([value]), ""]
    if name == "sampling":
        lines += [f"![{p}](results/{p})" for p in sampling_plots(report, folder)] + [""]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)} to rerun; "
                    "the others keep their sections from their last run (benchmarks/results)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--sampling-rows", default=None, help="bench_sampling --only ROWS (a subset, when time is short)")
    ap.add_argument("--render-only", action="store_true", help="rerun nothing: RESULTS.md from the saved runs")
    args = ap.parse_args(argv)
    names = [] if args.render_only else [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:  # before anything is run or written: a typo must not rewrite RESULTS.md
        ap.error(f"--only: unknown benchmark(s) {', '.join(map(repr, unknown))} (known: {', '.join(BENCHES)})")
    folder = HERE / "results"
    folder.mkdir(exist_ok=True)
    lines = ["# Benchmark results", "",
             f"`python benchmarks/run_all.py` on {platform.machine()} / {os.cpu_count()} CPUs, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}. Each section is one benchmark's "
             "`--quick --json` run; see the benchmark's docstring for what it measures. The load "
             "average before and after each one says how shared the machine was: on a loaded machine "
             "absolute times grow, so trust ratios (overhead, bf16 / fp32) over seconds. What the "
             "sampling figures mean, and where a run's time goes: docs/sampling.md, 'What a run costs'.", ""]
    for name in BENCHES:
        if name in names:
            print(f"bench_{name} ...", flush=True)
            extra = ["--only", args.sampling_rows] if name == "sampling" and args.sampling_rows else []
            before, when = load(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            report, error, seconds = run(name, extra)
            meta = {"seconds": seconds, "before": before, "after": load(), "when": when, "error": error}
            (folder / f"{name}.meta.json").write_text(json.dumps(meta))
            if report is not None:
                (folder / f"{name}.json").write_text(json.dumps(report, indent=1))
            else:
                (folder / f"{name}.json").unlink(missing_ok=True)
        elif (folder / f"{name}.meta.json").exists():
            # not rerun (--only): its section from its last run (or its failure), saying when
            meta = json.loads((folder / f"{name}.meta.json").read_text())
            saved = folder / f"{name}.json"
            report = json.loads(saved.read_text()) if saved.exists() else None
        else:
            continue
        lines += section(name, report, meta, folder, rerun=name in names)
        Path(args.out).write_text("\n".join(lines) + "\n")  # after each one: a stopped run keeps its figures
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
