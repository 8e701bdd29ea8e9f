"""UNet building blocks (improved-DDPM style): norms, timestep embedding, ResBlock, resampling.

All blocks act on frames folded into the batch axis: x [N, C, H, W] with N = B * F, and a
per-frame time embedding emb [N, E].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm group count: `max_groups` when it divides `channels`, else the largest divisor."""
    return math.gcd(max_groups, channels)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` (improved DDPM's init for residual outputs)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps t [N] -> [N, dim] (fractional t allowed).

    Layout is [cos(t * w_0..w_{h-1}), sin(t * w_0..w_{h-1})] with w_i = max_period^(-i/h), h = dim//2;
    an odd `dim` gets a trailing zero column.
    """
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)  # [h]
    args = t.to(dtype)[:, None] * freqs[None]  # [N, h]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [N, 2h]
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Float timesteps [N] -> time embedding [N, 4 * base] through sinusoid, Linear, SiLU, Linear."""

    def __init__(self, base_channels: int, embed_dim: int):
        super().__init__()
        self.base_channels = base_channels
        self.mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.base_channels)  # [N, base]
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # [N, E]


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale-shift by the time embedding, GroupNorm-SiLU-conv(zero init), skip."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_norm = group_norm(in_channels)
        self.in_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(embed_dim, 2 * out_channels)
        self.out_norm = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(F.silu(self.in_norm(x)))  # [N, Co, H, W]
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # [N, Co, 1, 1] each
        h = torch.addcmul(shift, self.out_norm(h), 1 + scale)  # norm(h) * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h)))  # [N, Co, H, W]
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [N, C, H, W] -> [N, C, H/2, W/2]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: [N, C, H, W] -> [N, C, 2H, 2W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
