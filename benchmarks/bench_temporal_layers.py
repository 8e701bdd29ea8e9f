"""Temporal layers vs number of frames: forward+backward seconds and peak memory.

    python benchmarks/bench_temporal_layers.py [--quick] [--json] [--frames 16,64,...] [--layers ...]

Layers (the temporal layer of a video UNet, each as pre-norm residual block on x [B*F, C, H, W]):
- attention-materialised: FDM's TemporalAttention (fdm_engine.models.attention) with live contextual
  relative encodings, computed as the published FDM/VDM code does: einsum scores and a materialised
  softmax (FDM_KERNELS=ref).
- attention-sdpa: the same layer without relative encodings, so it runs through
  F.scaled_dot_product_attention (fused; no F x F probabilities kept).
- bi-s4d-conv: fdm_engine.models.ssm_layers.BiS4D (forward + time-reversed S4D summed, MLP 512) with the published
  convolution form (Vandermonde kernel + FFT).
- bi-s4d-scan: the same layer with S4D in its chunked scan form (kernels.diag_scan).
Fixed: batch 1, C = 128 channels, 8 x 8 positions, 4 heads x 32 (attention), N/2 = 256 modes and
MLP hidden 512 (bi-S4D), float32, frames 16, 64, 256, 1024, 4096 (--quick: 16, 64, 256).

Method. Every row runs in a fresh subprocess: build layer and input, one warm-up forward+backward
(rows estimated under ~20 s; none with --quick), then the timed forward+backward ("seconds": the
minimum over the repeats; --threads sets torch's thread count, use 1 on a shared machine). Peak memory ("peak_bytes") is the peak resident set size during the timed passes above
the resident size just before them (Linux VmHWM, reset through /proc/self/clear_refs), with
MALLOC_MMAP_THRESHOLD_=65536 so every tensor buffer is its own mmap, returned to the OS when freed,
so resident size follows live tensors (tracemalloc does not see torch's allocations). The warm-up
leaves parameter gradients allocated; they are freed before the timed passes so every row counts
the same things: activations saved for backward, temporaries, input and parameter gradients.
A row whose estimated peak exceeds 80% of the available memory is skipped and listed under
"skipped" (and on stderr); so is a row whose subprocess dies.

With CUDA present the script also compares the Triton kernels with their references on the GPU
(forward+backward ms, GB/s for diag_scan, TFLOP/s for temporal attention), under "gpu" in --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

LAYERS = ("attention-materialised", "attention-sdpa", "bi-s4d-conv", "bi-s4d-scan")
FRAMES = (16, 64, 256, 1024, 4096)
QUICK_FRAMES = (16, 64, 256)
CHANNELS, SIDE, HEADS = 128, 8, 4
STATE_SIZE, MLP_HIDDEN = 512, 512


# ---- one row, in a child process ---------------------------------------------------------------


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def build_layer(layer: str, frames: int):
    """(module, call) where call() runs one forward+backward of the layer on fresh-graph inputs."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(frames, CHANNELS, SIDE, SIDE, requires_grad=True)  # [B*F, C, H, W], B = 1
    if layer.startswith("attention"):
        from fdm_engine.models.attention import FrameContext, TemporalAttention, relative_features

        embed = 4 * CHANNELS
        module = TemporalAttention(CHANNELS, HEADS, embed)
        if layer == "attention-sdpa":
            module.rel.out.requires_grad_(False)  # R stays exactly 0: the layer takes the SDPA path
        else:
            with torch.no_grad():  # live relative encodings, as in a trained model
                module.rel.out.weight.normal_(0, 0.02)
        idx = torch.arange(frames)[None]  # [1, F]
        ctx = FrameContext(1, frames, torch.randn(1, frames, embed), relative_features(idx), None)

        def call():
            module(x, ctx).square().mean().backward()

    else:
        from torch import nn

        from fdm_engine.models.ssm_layers import BiS4D, BiS4DConfig

        chunk = int(os.environ.get("FDM_BENCH_SCAN_CHUNK", "0"))
        cfg = BiS4DConfig(CHANNELS, STATE_SIZE, MLP_HIDDEN, mode=layer.rsplit("-", 1)[-1], chunk=chunk)
        module = nn.ModuleDict({"norm": nn.GroupNorm(32, CHANNELS), "ssm": BiS4D(cfg)})

        def call():
            h = module["ssm"](module["norm"](x), frames=frames)  # [B*F, C, H, W]
            (x + h).square().mean().backward()

    return module, x, call


def run_row(layer: str, frames: int, repeats: int, warmup: bool) -> dict:
    import torch

    module, x, call = build_layer(layer, frames)
    if warmup:
        call()
    module.zero_grad(set_to_none=True)
    x.grad = None
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        module.zero_grad(set_to_none=True)
        x.grad = None
    peak = _status_bytes("VmHWM") - base
    return {"layer": layer, "frames": frames, "seconds": min(times), "peak_bytes": peak, "threads": torch.get_num_threads()}


# ---- the parent: rows, skipping, tables --------------------------------------------------------


def estimate(layer: str, frames: int) -> tuple[float, float]:
    """Rough (peak bytes, seconds) from the measured scaling, to skip rows that cannot fit."""
    positions, tokens = SIDE * SIDE, frames * SIDE * SIDE
    if layer == "attention-materialised":
        # ~5 float32 [S, n, F, F] tensors live in backward (scores, probabilities, their grads) + R
        return 5 * 4 * positions * HEADS * frames**2 + 3 * 4 * frames**2 * CHANNELS, 1.1e-8 * positions * HEADS * frames**2
    if layer == "attention-sdpa":
        return 4 * 40 * tokens * CHANNELS, 4e-8 * positions * HEADS * frames**2 + 1e-6 * tokens
    if layer == "bi-s4d-conv":  # the H x N/2 x F Vandermonde tensors dominate
        return 2e6 * frames, 1e-2 * frames
    return 1e6 * frames, 2e-2 * frames


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def run_child(layer: str, frames: int, repeats: int, warmup: bool, threads: int | None, scan_chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--row", layer, str(frames), "--repeats", str(repeats)] + ([] if warmup else ["--no-warmup"])
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "FDM_KERNELS": "ref" if layer == "attention-materialised" else "cpu",
           "FDM_BENCH_SCAN_CHUNK": str(scan_chunk)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"layer": layer, "frames": frames, "skipped": f"subprocess failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def crossover(runs: list[dict], ssm: str, attn: str = "attention-sdpa") -> int | None:
    """Smallest measured frame count from which `ssm` is faster than `attn` at every larger count."""
    t = {(r["layer"], r["frames"]): r["seconds"] for r in runs if "seconds" in r}
    frames = sorted({f for (l, f) in t if l == ssm and (attn, f) in t})
    result = None
    for f in reversed(frames):
        if t[(ssm, f)] < t[(attn, f)]:
            result = f
        else:
            break
    return result


def gpu_comparison(quick: bool) -> list[dict]:
    """Triton vs reference on CUDA: ms per forward+backward, GB/s (scan), TFLOP/s (attention)."""
    import torch

    from kernels import diag_scan, temporal_attention

    def bench(fn, reps=10):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    rows = []
    dev = "cuda"
    for B, D, L in [(8, 4096, 1024)] if quick else [(8, 4096, 1024), (64, 32768, 16), (1, 1024, 65536)]:
        a = torch.polar(0.3 + 0.7 * torch.rand(B, D, L, device=dev), 6.28 * torch.rand(B, D, L, device=dev)).requires_grad_()
        x = torch.randn(B, D, L, dtype=torch.complex64, device=dev, requires_grad=True)
        g = torch.randn_like(x)
        moved = 8 * B * D * L * (3 + 6)  # fwd reads a, x, writes h; bwd reads a, h, dh, writes da, dx (+ dh cast)
        for impl in ("triton", "cpu"):
            s = bench(lambda: torch.autograd.grad(diag_scan(a, x, impl=impl), (a, x), g))
            rows.append({"op": "diag_scan", "impl": impl, "shape": [B, D, L], "ms": 1e3 * s, "GB/s": moved / s / 1e9})
    for B, S, n, Fr, Dh in [(2, 256, 4, 20, 64)] if quick else [(2, 256, 4, 20, 64), (1, 64, 4, 256, 32), (1, 64, 4, 1024, 32)]:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            q, k, v = (torch.randn(B, S, n, Fr, Dh, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            rel = (0.1 * torch.randn(B, n, Fr, Fr, Dh, device=dev, dtype=dtype)).requires_grad_()
            g = torch.randn_like(q)
            # Useful FLOPs per (b, s, head): forward q.k 2, R.(q+k) 3, p.v 2, p.R 2 (x F^2 D); backward
            # counted as 2.5x forward (FlashAttention's convention; recomputation not counted).
            flops = B * S * n * Fr * Fr * Dh * 9 * 3.5
            for impl in ("triton", "ref"):
                try:
                    s = bench(lambda: torch.autograd.grad(temporal_attention(q, k, v, rel, None, impl=impl), (q, k, v, rel), g))
                except torch.cuda.OutOfMemoryError:
                    rows.append({"op": "temporal_attention", "impl": impl, "shape": [B, S, n, Fr, Dh], "skipped": "OOM"})
                    torch.cuda.empty_cache()
                    continue
                rows.append({"op": "temporal_attention", "impl": impl, "dtype": str(dtype).split(".")[-1],
                             "shape": [B, S, n, Fr, Dh], "ms": 1e3 * s, "TFLOP/s": flops / s / 1e12})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="frames 16, 64, 256, one cold pass per row (about a minute)")
    p.add_argument("--json", action="store_true", help='print {"runs": [...]} as JSON')
    p.add_argument("--frames", help="comma-separated frame counts (overrides the defaults)")
    p.add_argument("--layers", help=f"comma-separated subset of {','.join(LAYERS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per row (default 3, --quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per row (default: torch's default)")
    p.add_argument("--scan-chunk", type=int, default=0,
                   help="S4D chunk length for bi-s4d-scan (0 = the layer default; >= frames = one chunk, no scan)")
    p.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--row", nargs=2, metavar=("LAYER", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.row:  # child mode: one measurement, one JSON line
        print(json.dumps(run_row(args.row[0], int(args.row[1]), args.repeats or 1, not args.no_warmup)))
        return 0

    frames = [int(f) for f in args.frames.split(",")] if args.frames else list(QUICK_FRAMES if args.quick else FRAMES)
    layers = args.layers.split(",") if args.layers else list(LAYERS)
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        p.error(f"unknown layer(s) {', '.join(unknown)} (choose from {', '.join(LAYERS)})")
    repeats = args.repeats or (1 if args.quick else 3)
    budget = 0.8 * mem_available()
    runs, skipped = [], []
    for f in frames:
        for layer in layers:
            need, secs = estimate(layer, f)
            if need > budget:
                msg = f"needs ~{need / 2**30:.1f} GiB, {budget / 2**30:.1f} GiB available"
                skipped.append({"layer": layer, "frames": f, "reason": msg})
                print(f"skipped {layer} at {f} frames: {msg}", file=sys.stderr)
                continue
            warmup = secs < 20 and not args.quick  # --quick: one cold pass per row, to stay near a minute
            row = run_child(layer, f, repeats if secs < 5 else 1, warmup, args.threads, args.scan_chunk)
            if "skipped" in row:
                skipped.append({"layer": layer, "frames": f, "reason": row.pop("skipped")})
                print(f"skipped {layer} at {f} frames: {skipped[-1]['reason']}", file=sys.stderr)
                continue
            runs.append(row)
            if not args.json:
                print(f"{layer:24s} {f:5d} frames  {row['seconds']:8.3f} s  {row['peak_bytes'] / 2**20:9.1f} MiB", flush=True)
    result = {
        "runs": runs,
        "skipped": skipped,
        "config": {"batch": 1, "channels": CHANNELS, "positions": SIDE * SIDE, "heads": HEADS, "head_dim": CHANNELS // HEADS,
                   "s4d_modes": STATE_SIZE // 2, "mlp_hidden": MLP_HIDDEN, "scan_chunk": args.scan_chunk or "default (64)",
                   "dtype": "float32", "threads": runs[0]["threads"] if runs else None,
                   "memory": "peak RSS above baseline per fresh subprocess (VmHWM, MALLOC_MMAP_THRESHOLD_=65536)"},
        "bi_s4d_faster_than_sdpa_from_frames": {
            m: crossover(runs, m) for m in ("bi-s4d-conv", "bi-s4d-scan") if m in layers and "attention-sdpa" in layers
        },
    }
    import torch

    if torch.cuda.is_available():
        result["gpu"] = gpu_comparison(args.quick)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for m, f in result["bi_s4d_faster_than_sdpa_from_frames"].items():
            print(f"{m} faster than attention-sdpa from {f} frames" if f else f"{m} not faster than attention-sdpa at the measured frames")
        for row in result.get("gpu", []):
            print("gpu", json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
