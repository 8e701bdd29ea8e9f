"""Optimisers by name and the learning-rate schedule (linear warm-up, constant, optional linear decay to 0)."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def build_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def lr_at(step: int, lr: float, warmup_steps: int, steps: int = 0, decay_steps: int = 0) -> float:
    """Learning rate of optimiser step `step` (0-based) of a `steps`-step run: lr * (step + 1) / warmup
    during warm-up, lr * (steps - step) / decay over the last `decay_steps` (warm-up, stable, decay).

    The decay depends only on the steps left, so a run trained at constant lr can be annealed later by
    resuming it with a decay that starts after its last step.
    """
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if decay_steps and step >= steps - decay_steps:
        return lr * max(steps - step, 0) / decay_steps
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(params, max_norm: float) -> float:
    """Clip the global gradient norm to max_norm (0 = no clipping); returns the norm before."""
    params = [p for p in params if p.grad is not None]
    limit = max_norm if max_norm > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))
