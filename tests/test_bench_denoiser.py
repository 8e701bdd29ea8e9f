"""benchmarks/bench_denoiser.py: its FLOP count against an analytic count, and its JSON rows."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from fdm_engine.models.fdm_unet import fdm_preset

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_denoiser", ROOT / "benchmarks" / "bench_denoiser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def analytic_flops(model, inputs) -> dict[str, int]:
    """2 * multiply-adds of every Conv2d and Linear, from the shapes each one saw."""
    totals = {"conv": 0, "linear": 0}

    def conv_hook(mod, args, out):
        cin_per_group = mod.in_channels // mod.groups
        totals["conv"] += 2 * out.numel() * cin_per_group * mod.kernel_size[0] * mod.kernel_size[1]

    def linear_hook(mod, args, out):
        totals["linear"] += 2 * out.numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return totals


def test_flop_count_matches_the_layer_shapes():
    bench = load_bench()
    config = fdm_preset("tiny")
    model = bench.make_model(config, "random")
    inputs = bench.make_inputs(config, 1)
    with torch.no_grad():
        by_op = bench.count_flops(lambda: model(*inputs), by_op=True)
        total = bench.count_flops(lambda: model(*inputs))
    truth = analytic_flops(model, inputs)
    conv = sum(n for op, n in by_op.items() if "convolution" in op)
    assert conv == truth["conv"]
    # Linear layers are addmm/mm; the attention matmuls come on top (bmm, SDPA).
    linear = sum(n for op, n in by_op.items() if op in ("aten.addmm", "aten.mm"))
    assert linear == truth["linear"]
    assert total == sum(by_op.values()) > conv + linear


def test_rows_are_self_consistent():
    bench = load_bench()
    row = bench.bench_one(fdm_preset("tiny"), 1, "init", rounds=1, matmul=bench.Matmul(256))
    assert set(row) >= {"image_size", "channels", "max_frames", "batch", "gflop_per_forward",
                        "seconds_per_forward", "gflops"}
    assert (row["image_size"], row["channels"], row["max_frames"], row["batch"]) == (32, 32, 10, 1)
    assert row["gflops"] == pytest.approx(row["gflop_per_forward"] / row["seconds_per_forward"])
    assert row["seconds_per_forward"] <= row["seconds_per_forward_median"]
    assert 0 < row["conv_gflop_per_forward"] < row["gflop_per_forward"]
