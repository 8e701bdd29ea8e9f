"""UNet building blocks (improved-DDPM style): norms, timestep embedding, ResBlock, resampling.

All blocks act on frames folded into the batch axis: x [N, C, H, W] with N = B * F, and a
per-frame time embedding emb [N, E]. ResBlock and the resamplers also take `dims=3` for 3D-conv
UNets (RaMViD): x [N, C, F, H, W] with one embedding per clip, emb [N, E].
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


class Conv3d(nn.Conv3d):
    """nn.Conv3d whose single-clip CPU calls stay on oneDNN.

    PyTorch's CPU heuristic sends batch-1 float32 inputs with N*C*F*H < 20480 (every layer of a
    small model) to its native kernel: 72 ms against oneDNN's 2.3 ms for [1, 32, 10, 32, 32]
    channels-last-3d with a 3x3x3 kernel. Same results and gradients (up to float rounding).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] == 1 and self.padding_mode == "zeros":
            if torch.backends.mkldnn.is_available():
                w, b = self.weight, self.bias
                return torch.mkldnn_convolution(x, w, b, self.padding, self.stride, self.dilation, self.groups)
        return super().forward(x)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """nn.Conv1d / Conv2d / Conv3d for `dims` = 1 / 2 / 3 (same arguments as the torch class)."""
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: Conv3d}[dims](*args, **kwargs)


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

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        self.in_norm = group_norm(in_channels)
        self.in_conv = conv_nd(dims, in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(embed_dim, 2 * out_channels)
        self.out_norm = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_conv = zero_module(conv_nd(dims, out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else conv_nd(dims, in_channels, out_channels, 1)
        self.dims = dims

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # In-place SiLU / add only on fresh intermediates whose backward does not need them.
        h = self.in_conv(F.silu(self.in_norm(x), inplace=True))  # [N, Co, H, W]
        e = self.emb(F.silu(emb))  # [N, 2*Co]
        scale, shift = e.view(e.shape + (1,) * self.dims).chunk(2, dim=1)  # [N, Co, 1, 1(, 1)] each
        h = torch.addcmul(shift, self.out_norm(h), 1 + scale)  # norm(h) * (1 + scale) + shift
        h = self.out_conv(self.dropout(F.silu(h, inplace=True)))  # [N, Co, H, W]
        return h.add_(self.skip(x))


class Downsample(nn.Module):
    """Stride-2 3x3 conv: [N, C, H, W] -> [N, C, H/2, W/2].

    With dims=3, a 3x3x3 conv with `stride` (e.g. (1, 2, 2): space only; (2, 2, 2): time too).
    """

    def __init__(self, channels: int, dims: int = 2, stride: int | tuple[int, ...] = 2):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: [N, C, H, W] -> [N, C, 2H, 2W].

    With dims=3, nearest by `scale` (e.g. (1, 2, 2) or (2, 2, 2)) then a 3x3x3 conv.
    """

    def __init__(self, channels: int, dims: int = 2, scale: int | tuple[int, ...] = 2):
        super().__init__()
        self.scale = scale
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))
