"""FDM denoiser throughput: seconds and FLOPs per forward, achieved GFLOP/s, vs this machine's matmul.

    python benchmarks/bench_denoiser.py [--quick] [--json] [--weights random|init] [--threads N] [--default-malloc]

FLOPs come from torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls and attention;
norms and pointwise ops count zero); the CPU flash-attention op, which it does not know, is counted
with its own formula for attention (4 * batch * heads * L^2 * D).

Timing (torch.no_grad, after warm-up): rounds that alternate a 2048x2048 fp32 matmul and the
model's forwards, so both see the same states of a shared machine. Each is reported at its best
over the run ("matmul_gflops": the fastest matmul; "seconds_per_forward": the fastest forward, as
timeit advises, since interference only ever adds time); "seconds_per_forward_median" is there too.

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

from fdm_engine.cpu_memory import retain_freed_memory  # noqa: E402
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


def timed(fn, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


class Matmul:
    """The machine's fp32 matmul rate: best GFLOP/s over every call of `measure()`."""

    def __init__(self, n: int = 2048):
        self.a, self.b, self.n, self.best = torch.randn(n, n), torch.randn(n, n), n, 0.0

    def measure(self, repeats: int = 3) -> float:
        seconds = min(timed(lambda: self.a @ self.b, 1, repeats))
        self.best = max(self.best, 2 * self.n**3 / seconds / 1e9)
        return self.best


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


def count_flops(fn, by_op: bool = False):
    """FLOPs of one call of `fn()` as FlopCounterMode sees them (plus EXTRA_FLOP_FORMULAS).

    by_op=True: {aten op name: FLOPs} instead of the total."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with counter:
        fn()
    if by_op:
        return {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops()


def bench_one(config: FDMUNetConfig, batch: int, weights: str, rounds: int, matmul: Matmul) -> dict:
    model = make_model(config, weights)
    inputs = make_inputs(config, batch)
    times = []
    with torch.no_grad():
        by_op = count_flops(lambda: model(*inputs), by_op=True)
        timed(lambda: model(*inputs), 1, 0)
        for _ in range(rounds):
            matmul.measure()
            times += timed(lambda: model(*inputs), 0, 2)
    seconds, flops = min(times), sum(by_op.values())
    return {
        "image_size": config.image_size,
        "channels": config.base_channels,
        "max_frames": config.max_frames,
        "batch": batch,
        "gflop_per_forward": flops / 1e9,
        "conv_gflop_per_forward": sum(n for op, n in by_op.items() if "convolution" in op) / 1e9,
        "seconds_per_forward": seconds,
        "seconds_per_forward_median": statistics.median(times),
        "gflops": flops / seconds / 1e9,
    }


# Where a forward's time goes: aten op name -> category (first matching substring wins).
OP_CATEGORIES = (
    ("convolution", ("convolution",)),
    ("matmul", ("addmm", "aten::mm", "aten::bmm", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "softmax")),
    ("group norm", ("group_norm",)),
    ("copies, cat", ("copy_", "aten::cat", "aten::clone", "upsample")),
    ("pointwise", ("silu", "aten::add", "aten::mul", "addcmul", "aten::sub", "aten::div", "aten::masked_fill")),
)


def time_breakdown(config: FDMUNetConfig, batch: int, weights: str, forwards: int = 3) -> dict[str, float]:
    """{category: seconds per forward} from torch.profiler self-CPU times; ops in no category are "other"."""
    model = make_model(config, weights)
    inputs = make_inputs(config, batch)
    with torch.no_grad():
        timed(lambda: model(*inputs), 2, 0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(forwards):
                model(*inputs)
    totals = dict.fromkeys([name for name, _ in OP_CATEGORIES] + ["other"], 0.0)
    for event in prof.key_averages():
        category = next((name for name, keys in OP_CATEGORIES if any(k in event.key for k in keys)), "other")
        totals[category] += event.self_cpu_time_total / 1e6 / forwards
    return totals


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 64 px config, fewer repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--weights", choices=["random", "init"], default="random")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--default-malloc", action="store_true",
        help="leave glibc malloc as it is (default: retain freed memory, as the fdm command does)",
    )
    parser.add_argument("--breakdown", action="store_true", help="also print where each forward's time goes (profiler)")
    args = parser.parse_args(argv)
    retained = False if args.default_malloc else retain_freed_memory()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else 5

    matmul = Matmul()
    rows = []
    for label, config, batch in bench_configs(args.quick):
        rows.append((label, bench_one(config, batch, args.weights, rounds, matmul)))
    peak = matmul.best
    result = {
        "matmul_gflops": peak,
        "threads": torch.get_num_threads(),
        "weights": args.weights,
        "retain_freed_memory": retained,
        "configs": [r for _, r in rows],
    }
    if args.json:
        print(json.dumps(result))
        return result
    print(
        f"fp32 matmul 2048^3: {peak:.1f} GFLOP/s  ({result['threads']} threads, weights={args.weights}, "
        f"retain freed memory: {retained})"
    )
    print(f"{'config':<16}{'px':>5}{'ch':>5}{'K':>4}{'B':>3}{'GFLOP/fwd':>11}{'s/fwd':>9}{'GFLOP/s':>9}{'x matmul':>9}")
    for label, r in rows:
        print(
            f"{label:<16}{r['image_size']:>5}{r['channels']:>5}{r['max_frames']:>4}{r['batch']:>3}"
            f"{r['gflop_per_forward']:>11.2f}{r['seconds_per_forward']:>9.3f}{r['gflops']:>9.1f}"
            f"{r['gflops'] / peak:>9.2f}"
        )
    if args.breakdown:
        for label, config, batch in bench_configs(args.quick):
            parts = time_breakdown(config, batch, args.weights)
            total, conv_seconds = sum(parts.values()), parts["convolution"]
            row = next(r for lbl, r in rows if lbl == label)
            print(f"\n{label}: profiled time per forward {total * 1e3:.1f} ms (profiler overhead included)")
            for name, sec in parts.items():
                print(f"  {name:<14}{sec * 1e3:>8.1f} ms {100 * sec / total:>5.1f} %")
            print(
                f"  convolutions: {row['conv_gflop_per_forward']:.2f} of {row['gflop_per_forward']:.2f} GFLOP at "
                f"{row['conv_gflop_per_forward'] / conv_seconds:.0f} GFLOP/s; were every other op free, the forward would "
                f"reach {row['gflop_per_forward'] / conv_seconds / peak:.2f} x matmul"
            )
    return result


if __name__ == "__main__":
    main()
