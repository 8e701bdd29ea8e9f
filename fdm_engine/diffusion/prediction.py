"""Conversions between eps, x0 and v predictions.

With x_t = a*x0 + s*eps (a^2 + s^2 = 1) and v = a*eps - s*x0:
x0 = a*x_t - s*v, eps = s*x_t + a*v, and x0 = (x_t - s*eps)/a, eps = (x_t - a*x0)/s.
a, s broadcast against x_t.
"""

from __future__ import annotations

import torch


def to_x0(pred: torch.Tensor, kind: str, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    if kind == "x0":
        return pred
    if kind == "eps":
        return (x_t - s * pred) / a
    if kind == "v":
        return a * x_t - s * pred
    raise ValueError(f"unknown prediction type {kind!r}")


def from_x0(x0: torch.Tensor, kind: str, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The `kind` prediction consistent with x0 at x_t. eps is undefined where s == 0 (clean)."""
    if kind == "x0":
        return x0
    eps = (x_t - a * x0) / s
    if kind == "eps":
        return eps
    if kind == "v":
        return a * eps - s * x0
    raise ValueError(f"unknown prediction type {kind!r}")


def convert(pred: torch.Tensor, src: str, dst: str, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    if src == dst:
        return pred
    return from_x0(to_x0(pred, src, x_t, a, s), dst, x_t, a, s)


def target(kind: str, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The regression target of a `kind` model for x_t = a*x0 + s*noise."""
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    if kind == "v":
        return a * noise - s * x0
    raise ValueError(f"unknown prediction type {kind!r}")
