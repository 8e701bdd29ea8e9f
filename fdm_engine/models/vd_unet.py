"""The "Video Diffusion Models" UNet as swookey-thinky/video_diffusion trains it (seed 004), so its
checkpoints run here (fdm_engine/published/video_diffusion.py; docs/checkpoints.md).

A space-time factorised UNet on whole clips, x [b, C, f, H, W]:

- every conv is 1x3x3 (per frame); the ResBlocks' GroupNorms (32 groups) pool over the whole
  clip (channel group x frames x pixels), so frames interact there too and each clip runs on its
  real frames only (`on_real_frames`: padding cannot reach real outputs);
- BigGAN ResBlocks: norm-SiLU-conv, a time projection that is a stack of `mlp_layers` MLPs
  (Linear-SiLU-Linear each, hidden width = input width; no activation in front) giving
  scale-shift (or an additive bias), norm-SiLU-dropout-conv, skip (identity, 1x3x3 or 1x1x1 conv);
  `resblock_updown` puts the resampling inside the block, between the first SiLU and conv;
- resampling: 2x2 average pooling or a stride-2 1x3x3 conv; nearest x2, optionally then a conv;
- at the attention resolutions (and in the middle) each ResBlock is followed by spatial attention
  over each frame's pixels, then temporal attention over the frames at each pixel; both are
  GroupNorm(32) -> qkv -> attention -> proj, added to the un-normalised input;
- temporal attention logits are q.k (no 1/sqrt(d)) plus Shaw et al.'s relative key term
  q_i . E[d] with a learned table E per head over d = index(key) - index(query) in
  [-(M-1), M-1], M = max_relative_position (the published code also holds a value table it never
  uses: its relative-values switch is off); the heads' outputs are put back together the way the
  published code does it, a bare reshape of [heads, f, d] to [C, f];
- the time input is a log-SNR: lambda clipped to [clip_min, clip_max], mapped to
  u = arctan(exp(-lambda/2)) / (pi/2) in [0, 1] (the cosine schedule's own time), then a sinusoid
  of 1000 u / max_time ([sin, cos], frequencies 10000^(-i/(h-1))) through Linear-SiLU-Linear.

Our contract gives timesteps, so the model keeps the log-SNR schedule it was trained on
(`logsnr_schedule`, `num_steps`, `logsnr_min/max`: fdm_engine.diffusion.schedule.logsnr_grid) and
looks lambda up there; one timestep per clip, the largest over its real frames (the latent level).
Relative positions use frame indices, clipped to the table: for contiguous frames (all the
published code ever saw) that is its slot difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.config import Config
from fdm_engine.diffusion.schedule import LOGSNR_SCHEDULES, logsnr_grid
from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS
from fdm_engine.models.contract import check_contract_inputs, on_real_frames

GROUPS = 32  # the published GroupNorms


@dataclass(frozen=True)
class VDUNetConfig(Config):
    """Constructor arguments (the published score network's parameters under our names)."""

    image_size: int = 32
    channels: int = 1
    base_channels: int = 128  # num_features
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)  # per level
    attention_resolutions: tuple[int, ...] = (16, 8)  # feature-map sizes with attention
    use_scale_shift_norm: bool = True
    resamp_with_conv: bool = False
    resblock_updown: bool = False
    dropout: float = 0.0
    mlp_layers: int = 1
    time_features: int = 128  # the sinusoid's width; time_features * time_mult must be 4 * base_channels
    time_mult: int = 4
    max_time: float = 1.0
    clip_min: float = -20.0
    clip_max: float = 20.0
    spatial_heads: int = 4  # used when spatial_dim_head is -1
    spatial_dim_head: int = 64  # else heads = width // spatial_dim_head
    temporal_heads: int = 4
    temporal_dim_head: int = 64
    max_relative_position: int = 16
    num_frames: int = 16  # the training clip length (the default K); any F is accepted
    logsnr_schedule: str = "logsnr-cosine"
    num_steps: int = 1024
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0

    def __post_init__(self):
        name = type(self).__name__
        for f in ("image_size", "channels", "base_channels", "mlp_layers", "time_features", "time_mult",
                  "max_relative_position", "num_frames", "num_steps"):
            if int(getattr(self, f)) < 1:
                raise FdmError(f"{name}.{f} must be >= 1 (got {getattr(self, f)})")
        mults = self.channel_mult
        if not mults or mults[0] != 1 or any(m < 1 for m in mults):
            raise FdmError(f"{name}.channel_mult must start with 1 (the published Unet feeds its first block "
                           f"base_channels channels) and be positive (got {mults})")
        if len(self.num_res_blocks) != len(mults) or any(n < 1 for n in self.num_res_blocks):
            raise FdmError(f"{name}.num_res_blocks needs one count >= 1 per level of channel_mult {mults} "
                           f"(got {self.num_res_blocks})")
        if self.image_size % 2 ** (len(mults) - 1):
            raise FdmError(f"{name}.image_size {self.image_size} is not divisible by 2^{len(mults) - 1}")
        if self.time_features * self.time_mult != 4 * self.base_channels:
            raise FdmError(f"{name}: the time embedding is {self.time_features} x {self.time_mult} wide but the "
                           f"blocks expect 4 x base_channels = {4 * self.base_channels}")
        for m in sorted(set(mults)):
            c = m * self.base_channels
            if c % GROUPS:
                raise FdmError(f"{name}: width {c} is not a multiple of the {GROUPS} GroupNorm groups")
            for kind in ("spatial", "temporal"):
                heads_of(c, getattr(self, f"{kind}_heads"), getattr(self, f"{kind}_dim_head"), f"{name}.{kind}")
        if not 0.0 <= self.dropout < 1.0:
            raise FdmError(f"{name}.dropout must be in [0, 1) (got {self.dropout})")
        if self.logsnr_schedule not in LOGSNR_SCHEDULES:
            raise FdmError(f"{name}.logsnr_schedule {self.logsnr_schedule!r} (known: {', '.join(LOGSNR_SCHEDULES)})")


def heads_of(channels: int, heads: int, dim_head: int, what: str) -> int:
    """The published head count: `heads` when dim_head is -1, else channels // dim_head."""
    if dim_head == -1:
        if heads < 1 or channels % heads:
            raise FdmError(f"{what}: {heads} heads do not divide {channels} channels")
        return heads
    if dim_head < 1 or channels % dim_head:
        raise FdmError(f"{what}: head width {dim_head} does not divide {channels} channels")
    return channels // dim_head


def frame_conv(cin: int, cout: int, bias: bool = True) -> nn.Conv3d:
    """A per-frame 3x3 conv on [b, C, f, H, W]."""
    return nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1), bias=bias)


def logsnr_sinusoid(logsnr: torch.Tensor, dim: int, cfg: VDUNetConfig) -> torch.Tensor:
    """lambda [b] -> [b, dim]: the cosine schedule's time u of lambda, then [sin, cos] of 1000 u / max_time."""
    lam = logsnr.float().clamp(cfg.clip_min, cfg.clip_max)
    u = torch.arctan(torch.exp(-0.5 * lam)) / (0.5 * math.pi)
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=lam.device) * -(math.log(10000.0) / (half - 1)))
    args = (u * 1000.0 / cfg.max_time)[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class Resample(nn.Module):
    """Space-only x2 down (average pool or stride-2 conv) or up (nearest, optionally a conv)."""

    def __init__(self, channels: int, up: bool, with_conv: bool):
        super().__init__()
        self.up = up
        if with_conv:
            self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 1, 1) if up else (1, 2, 2),
                                  padding=(0, 1, 1))
        else:
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
            return x if self.conv is None else self.conv(x)
        return F.avg_pool3d(x, (1, 2, 2)) if self.conv is None else self.conv(x)


def mlp(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cin), nn.SiLU(), nn.Linear(cin, cout))


class ResBlock(nn.Module):
    """BigGAN ResBlock with an MLP-stack time projection (module doc)."""

    def __init__(self, cin: int, cout: int, cfg: VDUNetConfig, resample: str | None = None):
        super().__init__()
        self.in_norm = nn.GroupNorm(GROUPS, cin)
        self.in_conv = frame_conv(cin, cout)
        self.scale_shift = cfg.use_scale_shift_norm
        width = 2 * cout if self.scale_shift else cout
        self.emb = nn.Sequential(*(mlp(4 * cfg.base_channels if i == 0 else width, width)
                                   for i in range(cfg.mlp_layers)))
        self.out_norm = nn.GroupNorm(GROUPS, cout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_conv = frame_conv(cout, cout)
        if cin == cout:
            self.skip = nn.Identity()
        else:
            self.skip = frame_conv(cin, cout) if cfg.resamp_with_conv else nn.Conv3d(cin, cout, 1)
        self.resample = None if resample is None else Resample(cin, resample == "up", with_conv=False)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.in_conv(h)
        e = self.emb(emb)[:, :, None, None, None]  # [b, width, 1, 1, 1]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out_conv(self.dropout(F.silu(h)))


class SpatialAttention(nn.Module):
    """Multi-head self-attention over each frame's pixels; x + proj(attn(norm(x)))."""

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, H, _ = x.shape
        n = rearrange(self.norm(rearrange(x, "b c f h w -> (b f) c h w")), "n c h w -> n (h w) c")
        q, k, v = rearrange(self.qkv(n), "n t (h three d) -> three n h t d", h=self.heads, three=3)
        w = torch.softmax((q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).float(), dim=-1).to(q.dtype)
        out = self.proj(rearrange(w @ v, "n h t d -> n t (h d)"))
        return x + self.dropout(rearrange(out, "(b f) (h w) c -> b c f h w", b=b, h=H))


class TemporalAttention(nn.Module):
    """Multi-head self-attention over the frames at each pixel with relative-key logits (module doc)."""

    def __init__(self, channels: int, heads: int, max_relative_position: int, dropout: float):
        super().__init__()
        self.heads, self.max_rel = heads, max_relative_position
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_k = nn.Parameter(torch.zeros(heads, 2 * max_relative_position - 1, channels // heads))
        self.proj = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """x [b, C, f, H, W]; rel [b, f, f]: the table row of each (query, key) pair."""
        b, _, f, H, W = x.shape
        n = rearrange(self.norm(rearrange(x, "b c f h w -> (b h w) c f")), "(b s) c f -> b s f c", b=b)
        q, k, v = rearrange(self.qkv(n), "b s f (h three d) -> three b s h f d", h=self.heads, three=3)
        logits = q @ k.transpose(-1, -2)  # [b, s, h, f, f]
        by_offset = torch.einsum("bshid,hmd->bshim", q, self.rel_k)  # q_i . E[m] for every table row m
        logits = logits + torch.take_along_dim(by_offset, rel[:, None, None], dim=-1)
        w = torch.softmax(logits, dim=-1)
        # The published layout: the heads' outputs [h, f, d] are read back as [C, f] by a bare
        # reshape (no transpose), so frames and channels interleave. Its weights were trained so.
        mixed = rearrange(w @ v, "b s h f d -> b s (h f d)").view(b, -1, w.shape[2] * v.shape[-1], f)
        out = self.proj(mixed.transpose(-1, -2))
        return x + self.dropout(rearrange(out, "b (h w) f c -> b c f h w", h=H))


class Stage(nn.ModuleList):
    """One published `ContextEmbedSequential`: each layer gets what it needs."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, TemporalAttention):
                h = layer(h, rel)
            else:
                h = layer(h)
        return h


class VDUNet(nn.Module):
    """pred [B, F, C, H, W] = model(x, frame_indices, noise_levels, observed, valid) (module doc)."""

    Config = VDUNetConfig

    def __init__(self, config: VDUNetConfig):
        super().__init__()
        c = self.config = config
        self.image_size, self.channels, self.max_frames = c.image_size, c.channels, None
        base, E = c.base_channels, 4 * c.base_channels
        self.time_embed = nn.Sequential(nn.Linear(c.time_features, E), nn.SiLU(), nn.Linear(E, E))
        self.register_buffer("logsnrs", logsnr_grid(c.logsnr_schedule, c.num_steps, c.logsnr_min, c.logsnr_max),
                             persistent=False)
        self.in_conv = frame_conv(c.channels, base, bias=False)
        attention_ds = {c.image_size // r for r in c.attention_resolutions if r > 0}

        def mixers(ch: int) -> list[nn.Module]:
            return [SpatialAttention(ch, heads_of(ch, c.spatial_heads, c.spatial_dim_head, "spatial"), c.dropout),
                    TemporalAttention(ch, heads_of(ch, c.temporal_heads, c.temporal_dim_head, "temporal"),
                                      c.max_relative_position, c.dropout)]

        def resampler(ch: int, kind: str) -> nn.Module:
            if c.resblock_updown:
                return ResBlock(ch, ch, c, resample=kind)
            return Resample(ch, kind == "up", c.resamp_with_conv)

        skips, ch, ds = [base], base, 1
        self.downs = nn.ModuleList()
        for level, m in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks[level]):
                layers = [ResBlock(ch, m * base, c)]
                ch = m * base
                layers += mixers(ch) if ds in attention_ds else []
                self.downs.append(Stage(layers))
                skips.append(ch)
            if level < len(c.channel_mult) - 1:
                self.downs.append(Stage([resampler(ch, "down")]))
                skips.append(ch)
                ds *= 2
        self.middle = Stage([ResBlock(ch, ch, c), *mixers(ch), ResBlock(ch, ch, c)])
        self.ups = nn.ModuleList()
        for level, m in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skips.pop(), m * base, c)]
                ch = m * base
                layers += mixers(ch) if ds in attention_ds else []
                if level and i == c.num_res_blocks[level]:
                    layers.append(resampler(ch, "up"))
                    ds //= 2
                self.ups.append(Stage(layers))
        self.out_norm = nn.GroupNorm(GROUPS, base)
        self.out_conv = frame_conv(base, c.channels, bias=False)

    def forward(self, x, frame_indices, noise_levels, observed, valid=None) -> torch.Tensor:
        """x [B, F, C, H, W]; frame_indices [B, F] int64; noise_levels [B, F] float timesteps;
        observed [B, F] bool; valid [B, F] bool or None -> pred [B, F, C, H, W] (0 on padding)."""
        check_contract_inputs(self, x, frame_indices, noise_levels, observed, valid)
        return on_real_frames(self.clip_forward, x, frame_indices, noise_levels, observed, valid)

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """Our timesteps [b] -> the log-SNR the network was trained with (linear between steps)."""
        table = self.logsnrs
        tc = t.float().clamp(0, len(table) - 1)
        lo = tc.floor().long()
        hi = (lo + 1).clamp(max=len(table) - 1)
        w = tc - lo
        return torch.where(w == 0, table[lo], table[lo] * (1 - w) + table[hi] * w)

    def clip_forward(self, x, frame_indices, noise_levels, observed) -> torch.Tensor:
        """The network on whole clips, slots in frame order: x [b, n, C, H, W] -> same."""
        t = noise_levels.amax(dim=1)  # [b] one timestep per clip: the latent level
        emb = self.time_embed(logsnr_sinusoid(self.logsnr(t), self.config.time_features, self.config))
        M = self.config.max_relative_position
        d = frame_indices[:, None, :] - frame_indices[:, :, None]  # [b, query, key]: key minus query
        rel = d.clamp(-(M - 1), M - 1) + (M - 1)
        h = self.in_conv(rearrange(x, "b f c h w -> b c f h w"))
        skips = [h]
        for stage in self.downs:
            h = stage(h, emb, rel)
            skips.append(h)
        h = self.middle(h, emb, rel)
        for stage in self.ups:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, rel)
        h = self.out_conv(F.silu(self.out_norm(h)))
        return rearrange(h, "b c f h w -> b f c h w")


MODELS.register("vd-unet", VDUNet)
