"""FDM denoiser throughput: seconds and FLOPs per forward, achieved GFLOP/s, vs this machine's matmul.

    python benchmarks/bench_denoiser.py [--quick] [--json] [--weights random|init] [--threads N]

FLOPs come from torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls and attention;
norms and pointwise ops count zero); the CPU flash-attention op, which it does not know, is counted
with its own formula for attention (4 * batch * heads * L^2 * D). Timing: torch.no_grad, warm-up, then the median of several
forwards. "matmul_gflops" is a 2048x2048 fp32 matmul timed in the same run, before and after the
models; the larger of the two is reported, so a busy machine cannot flatter the ratio.

Weights: "random" (default) perturbs every parameter, so the zero-initialised output layers and
relative-encoding nets are live, as in a trained model (temporal attention takes the general
relative-encoding path). "init" keeps the fresh initialisation, where the relative encodings are
zero and temporal attention takes the fused SDPA shortcut.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig, fdm_preset  # noqa: E402


def bench_configs(quick: bool) -> list[tuple[str, FDMUNetConfig, int]]:
    """(label, config, batch) rows; the 32 px / 64 channel / K=20 row is the headline."""
    rows = [
        ("tiny", fdm_preset("tiny"), 1),
        ("32px-64ch-K20", FDMUNetConfig(image_size=32, base_channels=64, max_frames=20), 1),
    ]
    if not quick:
        rows.append(("64px-64ch-K20", FDMUNetConfig(image_size=64, base_channels=64, max_frames=20), 1))
    return rows


def timed(fn, warmup: int, repeats: int) -> float:
    """Median wall seconds of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, warmup: int = 2, repeats: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, warmup, repeats) / 1e9


def make_model(config: FDMUNetConfig, weights: str) -> FDMUNet:
    torch.manual_seed(0)
    model = FDMUNet(config).eval()
    if weights == "random":
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    return model


def make_inputs(config: FDMUNetConfig, batch: int):
    """A typical FDM job: K frames, the first half observed (level 0), irregular frame indices."""
    K, s = config.max_frames, config.image_size
    x = torch.randn(batch, K, config.channels, s, s)  # [B, F, C, H, W]
    idx = torch.cumsum(torch.randint(1, 8, (batch, K)), dim=1)  # [B, F]
    observed = torch.zeros(batch, K, dtype=torch.bool)
    observed[:, : K // 2] = True
    levels = torch.where(observed, 0.0, 500.0)  # [B, F]
    return x, idx, levels, observed


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Ops FlopCounterMode has no formula for but which do attention matmuls (missing ones count 0).
EXTRA_FLOP_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop


def count_flops(fn) -> int:
    """FLOPs of one call of `fn()` as FlopCounterMode sees them (plus EXTRA_FLOP_FORMULAS)."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with counter:
        fn()
    return counter.get_total_flops()


def bench_one(config: FDMUNetConfig, batch: int, weights: str, warmup: int, repeats: int) -> dict:
    model = make_model(config, weights)
    inputs = make_inputs(config, batch)
    with torch.no_grad():
        flops = count_flops(lambda: model(*inputs))
        seconds = timed(lambda: model(*inputs), warmup, repeats)
    return {
        "image_size": config.image_size,
        "channels": config.base_channels,
        "max_frames": config.max_frames,
        "batch": batch,
        "gflop_per_forward": flops / 1e9,
        "seconds_per_forward": seconds,
        "gflops": flops / seconds / 1e9,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 64 px config, fewer repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--weights", choices=["random", "init"], default="random")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warmup, repeats = (1, 3) if args.quick else (2, 7)

    before = matmul_gflops()
    rows = []
    for label, config, batch in bench_configs(args.quick):
        rows.append((label, bench_one(config, batch, args.weights, warmup, repeats)))
    peak = max(before, matmul_gflops())
    result = {
        "matmul_gflops": peak,
        "threads": torch.get_num_threads(),
        "weights": args.weights,
        "configs": [r for _, r in rows],
    }
    if args.json:
        print(json.dumps(result))
        return result
    print(f"fp32 matmul 2048^3: {peak:.1f} GFLOP/s  ({result['threads']} threads, weights={args.weights})")
    print(f"{'config':<16}{'px':>5}{'ch':>5}{'K':>4}{'B':>3}{'GFLOP/fwd':>11}{'s/fwd':>9}{'GFLOP/s':>9}{'x matmul':>9}")
    for label, r in rows:
        print(
            f"{label:<16}{r['image_size']:>5}{r['channels']:>5}{r['max_frames']:>4}{r['batch']:>3}"
            f"{r['gflop_per_forward']:>11.2f}{r['seconds_per_forward']:>9.3f}{r['gflops']:>9.1f}"
            f"{r['gflops'] / peak:>9.2f}"
        )
    return result


if __name__ == "__main__":
    main()
