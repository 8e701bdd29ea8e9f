"""UNet3D: the space-time factorised UNet of video-diffusion-pytorch, as the SSM authors (seed 000)
trained it, with their temporal-layer slot ("attn" or "bi-s4d").

Layout on x [B, C, F, H, W] (every conv is per frame: kernel 1 x k x k):

    in_conv (1x7x7) -> temporal block -> r
    per level: ResBlock, ResBlock, linear spatial attention, temporal block, down (1x4x4, stride 2)
    middle:    ResBlock, full spatial attention, temporal block, ResBlock
    per level: cat skip, ResBlock, ResBlock, linear spatial attention, temporal block, up (transposed)
    cat r -> ResBlock (no time embedding) -> 1x1x1 conv

Blocks are conv -> GroupNorm(8) -> (scale, shift from the time embedding) -> SiLU; the
attention and temporal blocks are pre-norm residual with a gain-only LayerNorm over channels.
The time embedding is a sinusoid ([sin, cos], frequencies 10000^(-i/(h-1))) through
`time_linears` Linear layers with GELUs, `time_mult` x dim wide (4 in lucidrains' code, 32 in
the SSM code).

Temporal blocks: "attn" is multi-head attention over frames with rotary embeddings on the first
min(32, head width) features and a T5-style relative position bias (32 buckets to distance 32,
one table shared by every block); "bi-s4d" is models.ssm_layers.BiS4D (mix "sum" with
`input_mlp` and no first GELU is the published version 16, mix "glu" without it version 8).

How the denoiser contract maps onto it (the published network is unconditional and takes one
timestep per clip):
- noise_levels: one timestep per clip, the largest over its real frames (the latent level;
  observed frames are given clean, as reconstruction guidance or conditioning by replacement do).
- observed: not an input (no marker plane).
- frame_indices: positions for the rotary embedding and the relative bias are the frame indices
  minus the clip's first one (the published net uses slot positions 0..F-1: the same for
  consecutive frames); the bi-s4d scan runs in frame-index order and ignores gaps.
- valid: GroupNorm statistics span the clip's frames, so each clip runs on its real frames only
  (fdm_engine.models.contract.on_real_frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS
from fdm_engine.models.contract import check_contract_inputs, on_real_frames
from fdm_engine.models.ssm_layers import BiS4D, BiS4DConfig
from fdm_engine.models.temporal_layers import relative_buckets

TEMPORAL = ("attn", "bi-s4d")


@dataclass(frozen=True)
class UNet3DConfig(Config):
    """Constructor arguments of UNet3D (names follow the SSM code's `Unet3D` where they exist).

    `ssm_*` configure "bi-s4d" (state size N, MLP width, how the directions mix and the
    published-layer options); `num_frames` is the training clip length (the default K); any F is accepted.
    """

    image_size: int = 64
    channels: int = 3
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    time_mult: int = 4
    time_linears: int = 2
    attn_heads: int = 8
    attn_dim_head: int = 32
    spatial_dim_head: int = 32
    init_kernel_size: int = 7
    resnet_groups: int = 8
    rel_buckets: int = 32
    rel_max_distance: int = 32
    temporal_layer: str = "attn"
    ssm_state_size: int = 512
    ssm_mlp_hidden: int = 512
    ssm_mix: str = "sum"
    ssm_input_mlp: bool = False
    ssm_gelu_first: bool = True
    num_frames: int = 16

    def __post_init__(self):
        name = type(self).__name__
        for field in ("image_size", "channels", "dim", "time_mult", "attn_heads", "attn_dim_head",
                      "spatial_dim_head", "resnet_groups", "num_frames"):
            if int(getattr(self, field)) < 1:
                raise FdmError(f"{name}.{field} must be >= 1 (got {getattr(self, field)})")
        if self.time_linears < 2:
            raise FdmError(f"{name}.time_linears must be >= 2 (got {self.time_linears})")
        if not self.dim_mults or any(m < 1 for m in self.dim_mults):
            raise FdmError(f"{name}.dim_mults must be positive (got {self.dim_mults})")
        if self.image_size % 2 ** (len(self.dim_mults) - 1):
            raise FdmError(f"{name}.image_size {self.image_size} is not divisible by 2^{len(self.dim_mults) - 1}")
        if self.init_kernel_size % 2 == 0:
            raise FdmError(f"{name}.init_kernel_size must be odd (got {self.init_kernel_size})")
        if self.temporal_layer not in TEMPORAL:
            raise FdmError(f"{name}.temporal_layer {self.temporal_layer!r} is unknown (known: {', '.join(TEMPORAL)})")
        bad = [m * self.dim for m in (1, *self.dim_mults) if (m * self.dim) % self.resnet_groups]
        if bad:
            raise FdmError(f"{name}.resnet_groups {self.resnet_groups} does not divide {bad[0]} channels")

    @property
    def time_dim(self) -> int:
        return self.dim * self.time_mult


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(t w_i), cos(t w_i)], w_i = 10000^(-i/(h-1)), h = dim // 2: t [N] -> [N, 2h]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class ChannelNorm(nn.Module):
    """Normalise over channels at each position of [B, C, ...] (biased variance), gain only."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.gamma.view(-1, *(1,) * (x.dim() - 2))


def frame_conv(cin: int, cout: int, k: int, **kwargs) -> nn.Conv3d:
    """A per-frame k x k conv on [B, C, F, H, W] (kernel 1 x k x k, 'same' padding)."""
    return nn.Conv3d(cin, cout, (1, k, k), padding=(0, k // 2, k // 2), **kwargs)


class Block(nn.Module):
    """Per-frame 3x3 conv, GroupNorm, optional scale-shift, SiLU."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.conv = frame_conv(cin, cout, 3)
        self.norm = nn.GroupNorm(groups, cout)

    def forward(self, x: torch.Tensor, scale_shift=None) -> torch.Tensor:
        h = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            h = torch.addcmul(shift, h, scale + 1)
        return F.silu(h)


class ResBlock(nn.Module):
    """Block (scale-shifted by the time embedding unless time_dim is None), Block, plus a 1x1x1
    skip when widths differ."""

    def __init__(self, cin: int, cout: int, time_dim: int | None, groups: int):
        super().__init__()
        self.emb = nn.Linear(time_dim, 2 * cout) if time_dim else None
        self.block1 = Block(cin, cout, groups)
        self.block2 = Block(cout, cout, groups)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.emb is not None:
            scale_shift = self.emb(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)  # [B, C, 1, 1, 1] x2
        h = self.block2(self.block1(x, scale_shift))
        return h + self.skip(x)


class LinearSpatialAttention(nn.Module):
    """Per-frame linear attention over H*W (softmax of q over features, of k over positions)."""

    def __init__(self, channels: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.qkv = nn.Conv2d(channels, 3 * heads * dim_head, 1, bias=False)
        self.out = nn.Conv2d(heads * dim_head, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, Fr, H, W = x.shape
        h = rearrange(x, "b c f h w -> (b f) c h w")
        q, k, v = (rearrange(t, "n (h d) x y -> n h d (x y)", h=self.heads) for t in self.qkv(h).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("nhdp,nhep->nhde", k, v)  # [N, heads, d, d]
        out = torch.einsum("nhde,nhdp->nhep", context, q)  # [N, heads, d, H*W]
        out = self.out(rearrange(out, "n h d (x y) -> n (h d) x y", x=H))
        return rearrange(out, "(b f) c h w -> b c f h w", b=B)


class SpatialAttention(nn.Module):
    """Per-frame softmax attention over the H*W positions (no biases)."""

    def __init__(self, channels: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.qkv = nn.Linear(channels, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, Fr, H, W = x.shape
        h = rearrange(x, "b c f h w -> b f (h w) c")
        q, k, v = (rearrange(t, "b f n (h d) -> b f h n d", h=self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(dim_head)
        out = self.out(rearrange(out, "b f h n d -> b f n (h d)"))
        return rearrange(out, "b f (h w) c -> b c f h w", h=H)


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the first 2*angles.shape[-1] features of x [..., F, D], rotating
    consecutive pairs (x_2i, x_2i+1) by angles [..., F, R]; the other features pass through."""
    r = 2 * angles.shape[-1]
    head, tail = x[..., :r], x[..., r:]
    a, b = head.unflatten(-1, (-1, 2)).unbind(-1)  # [..., F, R] each
    cos, sin = angles.cos(), angles.sin()
    rotated = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    return torch.cat([rotated, tail], dim=-1)


@dataclass
class FrameInfo:
    """Per-forward inputs of the temporal blocks."""

    bias: torch.Tensor | None  # [B, heads, F, F] relative position bias (attn)
    angles: torch.Tensor | None  # [B, F, R] rotary angles (attn)


class TemporalAttention(nn.Module):
    """Attention over frames at each position: rotary q/k, relative position bias, no biases."""

    def __init__(self, channels: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, channels, bias=False)

    def forward(self, x: torch.Tensor, info: FrameInfo) -> torch.Tensor:
        H = x.shape[-2]
        h = rearrange(x, "b c f h w -> b (h w) f c")
        q, k, v = (rearrange(t, "b s f (h d) -> b s h f d", h=self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        angles = info.angles[:, None, None]  # [B, 1, 1, F, R]
        q, k = rotate_pairs(q, angles), rotate_pairs(k, angles)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=info.bias[:, None].to(q.dtype))  # [B, S, h, F, d]
        out = self.out(rearrange(out, "b s h f d -> b s f (h d)"))
        return rearrange(out, "b (h w) f c -> b c f h w", h=H)


class TemporalS4D(nn.Module):
    """models.ssm_layers.BiS4D over the frames at each position."""

    def __init__(self, channels: int, config: UNet3DConfig):
        super().__init__()
        self.mixer = BiS4D(BiS4DConfig(
            channels, config.ssm_state_size, config.ssm_mlp_hidden, config.ssm_mix,
            input_mlp=config.ssm_input_mlp, gelu_first=config.ssm_gelu_first,
        ))

    def forward(self, x: torch.Tensor, info: FrameInfo) -> torch.Tensor:
        B, _, Fr, H, W = x.shape
        y = self.mixer.mix(rearrange(x, "b c f h w -> (b h w) f c"))
        return rearrange(y, "(b h w) f c -> b c f h w", b=B, h=H)


class PreNorm(nn.Module):
    """x + fn(norm(x)) with the channel LayerNorm; `fn` may take the FrameInfo."""

    def __init__(self, channels: int, fn: nn.Module):
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.fn = fn

    def forward(self, x: torch.Tensor, *info) -> torch.Tensor:
        return self.fn(self.norm(x), *info) + x


class Level(nn.Module):
    """One resolution of the down or up path: two ResBlocks, spatial and temporal mixing, resampling."""

    def __init__(self, cin: int, cout: int, config: UNet3DConfig, resample: nn.Module):
        super().__init__()
        c = config
        self.res1 = ResBlock(cin, cout, c.time_dim, c.resnet_groups)
        self.res2 = ResBlock(cout, cout, c.time_dim, c.resnet_groups)
        self.spatial = PreNorm(cout, LinearSpatialAttention(cout, c.attn_heads, c.spatial_dim_head))
        self.temporal = PreNorm(cout, temporal_layer(cout, c))
        self.resample = resample

    def forward(self, x, emb, info):
        x = self.temporal(self.spatial(self.res2(self.res1(x, emb), emb)), info)
        return x, self.resample(x)


def temporal_layer(channels: int, config: UNet3DConfig) -> nn.Module:
    if config.temporal_layer == "attn":
        return TemporalAttention(channels, config.attn_heads, config.attn_dim_head)
    return TemporalS4D(channels, config)


class UNet3D(nn.Module):
    """pred [B, F, C, H, W] = model(x, frame_indices, noise_levels, observed, valid) (module doc)."""

    Config = UNet3DConfig

    def __init__(self, config: UNet3DConfig):
        super().__init__()
        c = self.config = config
        self.image_size, self.channels, self.max_frames = c.image_size, c.channels, None
        dims = [c.dim, *(m * c.dim for m in c.dim_mults)]
        pairs = list(zip(dims[:-1], dims[1:]))
        last = len(pairs) - 1

        layers = [nn.Linear(c.dim, c.time_dim)] + [nn.Linear(c.time_dim, c.time_dim) for _ in range(c.time_linears - 1)]
        self.time_embed = nn.ModuleList(layers)  # GELU between consecutive layers
        self.rel_bias = nn.Embedding(c.rel_buckets, c.attn_heads)
        self.rotary_dim = min(32, c.attn_dim_head)
        self.in_conv = frame_conv(c.channels, c.dim, c.init_kernel_size)
        self.in_temporal = PreNorm(c.dim, temporal_layer(c.dim, c))

        def down(ch: int) -> nn.Module:
            return nn.Conv3d(ch, ch, (1, 4, 4), (1, 2, 2), (0, 1, 1))

        def up(ch: int) -> nn.Module:
            return nn.ConvTranspose3d(ch, ch, (1, 4, 4), (1, 2, 2), (0, 1, 1))

        self.downs = nn.ModuleList(
            Level(a, b, c, down(b) if i < last else nn.Identity()) for i, (a, b) in enumerate(pairs))
        mid = dims[-1]
        self.mid_res1 = ResBlock(mid, mid, c.time_dim, c.resnet_groups)
        self.mid_spatial = PreNorm(mid, SpatialAttention(mid, c.attn_heads, c.spatial_dim_head))
        self.mid_temporal = PreNorm(mid, temporal_layer(mid, c))
        self.mid_res2 = ResBlock(mid, mid, c.time_dim, c.resnet_groups)
        self.ups = nn.ModuleList(
            Level(2 * b, a, c, up(a) if i < last else nn.Identity()) for i, (a, b) in enumerate(reversed(pairs)))
        self.out_block = ResBlock(2 * c.dim, c.dim, None, c.resnet_groups)
        self.out_conv = nn.Conv3d(c.dim, c.channels, 1)

    def forward(self, x, frame_indices, noise_levels, observed, valid=None) -> torch.Tensor:
        """x [B, F, C, H, W]; frame_indices [B, F] int64; noise_levels [B, F] float timesteps;
        observed [B, F] bool; valid [B, F] bool or None -> pred [B, F, C, H, W] (0 on padding)."""
        check_contract_inputs(self, x, frame_indices, noise_levels, observed, valid)
        return on_real_frames(self.clip_forward, x, frame_indices, noise_levels, observed, valid)

    def frame_info(self, frame_indices: torch.Tensor) -> FrameInfo:
        if self.config.temporal_layer != "attn":
            return FrameInfo(None, None)
        pos = frame_indices - frame_indices[:, :1]  # [b, n] ascending from 0
        # The published bias is looked up at key - query (ours: query - key) in the same buckets.
        d = pos[:, None, :] - pos[:, :, None]  # [b, n, n] key minus query
        bias = rearrange(self.rel_bias(relative_buckets(d, self.config.rel_buckets, self.config.rel_max_distance)),
                         "b i j h -> b h i j")
        R = self.rotary_dim
        freqs = 1.0 / (10000 ** (torch.arange(0, R, 2, device=pos.device)[: R // 2].float() / R))  # [R/2]
        return FrameInfo(bias, pos.float()[:, :, None] * freqs)  # angles [b, n, R/2]

    def clip_forward(self, x, frame_indices, noise_levels, observed) -> torch.Tensor:
        """The network on whole clips, slots in frame order: x [b, n, C, H, W] -> same."""
        t = noise_levels.amax(dim=1)  # [b] one timestep per clip: the latent level
        emb = self.time_embed[0](sinusoid(t, self.config.dim))  # [b, time_dim]
        for layer in self.time_embed[1:]:
            emb = layer(F.gelu(emb))
        info = self.frame_info(frame_indices)

        h = self.in_temporal(self.in_conv(rearrange(x, "b f c h w -> b c f h w")), info)
        r = h
        skips = []
        for level in self.downs:
            skip, h = level(h, emb, info)
            skips.append(skip)
        h = self.mid_res2(self.mid_temporal(self.mid_spatial(self.mid_res1(h, emb)), info), emb)
        for level in self.ups:
            _, h = level(torch.cat([h, skips.pop()], dim=1), emb, info)
        h = self.out_conv(self.out_block(torch.cat([h, r], dim=1)))
        return rearrange(h, "b c f h w -> b f c h w")


MODELS.register("unet3d", UNet3D)
