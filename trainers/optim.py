"""Optimisers by name and the learning-rate schedule (linear warm-up, then constant)."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def build_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def lr_at(step: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of optimiser step `step` (0-based): lr * (step + 1) / warmup during warm-up."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(params, max_norm: float) -> float:
    """Clip the global gradient norm to max_norm (0 = no clipping); returns the norm before."""
    params = [p for p in params if p.grad is not None]
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))
