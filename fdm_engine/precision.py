"""The network's arithmetic precision: autocast around the network only.

`with_precision(model, "bf16", device)` runs the network under torch.autocast and hands its
output back in float32, so the sampler's arithmetic (and reconstruction guidance's) stays fp32.
The analytic oracle is exact arithmetic, not a network: it always runs in fp32.

"auto" is bf16 on CUDA. On the CPU bf16 pays only with native bf16 matmul (AVX512-BF16 or AMX):
without it a bf16 forward of the trained demo model took 1.7-2.3x as long as fp32
(benchmarks/RESULTS.md, bench_precision), so auto is bf16 there only where the CPU has it and a
bf16 matmul also measures faster than fp32 (timed once per process), else fp32.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from fdm_engine.errors import FdmError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def matmul_seconds(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """The best of `repeats` size x size matmuls in `dtype` on the CPU."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def cpu_bf16_pays() -> bool:
    """Native bf16 matmul, and it measures faster than fp32 here (no timing without it)."""
    return native_cpu_bf16() and matmul_seconds(torch.bfloat16) < matmul_seconds(torch.float32)


def resolve_precision(precision: str, device: torch.device, exact: bool = False) -> str:
    """The precision a run uses: the oracle always fp32; auto -> bf16 on CUDA, on the CPU bf16
    where it pays (cpu_bf16_pays), else fp32."""
    if exact:
        return "fp32"
    if precision == "auto":
        if device.type == "cuda":
            return "bf16"
        return "bf16" if device.type == "cpu" and cpu_bf16_pays() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise FdmError("--precision fp16: CPU autocast has no fp16 matmul; use bf16 or fp32")
    return precision


def expose_model_attributes(wrapper: nn.Module, model: nn.Module) -> None:
    """A wrapper answers for the frame size, channels, K and config of the model it wraps."""
    for name in ("image_size", "channels", "max_frames", "config"):
        if hasattr(model, name):
            setattr(wrapper, name, getattr(model, name))


class Autocast(nn.Module):
    """model(...) under autocast(dtype); the output comes back as float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device_type: str):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.device_type = device_type
        expose_model_attributes(self, model)

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return out.float()


def with_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The network wrapped for `precision` (a resolved one: fp32, bf16 or fp16)."""
    if precision == "fp32":
        return model
    return Autocast(model, DTYPES[precision], torch.device(device).type)
