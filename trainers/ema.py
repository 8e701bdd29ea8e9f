"""Exponential moving average of a model's weights (the weights `fdm sample` uses by default)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema <- decay * ema + (1 - decay) * weights, after every optimiser step.

    With warmup the decay at update n is min(decay, (1 + n) / (10 + n)), so a short run's EMA is
    not stuck near the initial weights; without it the decay is constant (the published setting).
    `module` is a frozen copy of the model holding the averages; buffers are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.updates) / (10 + self.updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.current_decay())
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = updates
