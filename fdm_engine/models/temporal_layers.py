"""Temporal layers: the frame-mixing slot of the space-time factorised UNets (VDM, SSM).

A temporal layer mixes the F frames at each spatial position; everything else in those UNets is
per frame. Layers are looked up by name in TEMPORAL_LAYERS (plug-ins: entry-point group
"fdm.temporal_layers"):

    constructor(channels: int, config) -> TemporalLayer
    layer(x [B*F, C, H, W], ctx: TemporalContext) -> [B*F, C, H, W]      residual included

`config` is the model's config; a layer reads the fields it needs from it (attn: `num_heads`,
`rel_buckets`, `rel_max_distance`; bi-s4d: `ssm_state_size`, `ssm_mlp_hidden`, `ssm_mix`).

Built in:
- "attn": VDM's temporal attention with a learned relative position bias (T5-style buckets of
  d = frame_index[query] - frame_index[key], one bias per head per bucket). Order enters only
  through d, so the output is unchanged by a constant shift of all frame indices, and any slot
  order works. Padding slots attend only to padding (masked).
- "bi-s4d": the SSM paper's bidirectional S4D layer (fdm_engine.models.ssm_layers.BiS4D). An SSM sees a sequence, not indices: frames are put in
  ascending frame-index order (padding last) for the scan and put back afterwards, and gaps
  between indices are ignored (frames 3, 7, 8 are scanned as three consecutive steps). Padding
  is isolated exactly: S4D is linear and time-invariant from a zero state, so real frames are
  scanned with padding inputs zeroed, and padding with real inputs zeroed (leading/trailing
  zeros leave the other outputs unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.models.attention import padding_mask
from fdm_engine.models.blocks import group_norm, zero_module
from fdm_engine.models.ssm_layers import BiS4D, BiS4DConfig
from fdm_engine.registry import Registry

TEMPORAL_LAYERS: Registry = Registry("temporal layer", group="fdm.temporal_layers")


def frame_order(frame_indices: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Slot permutation [B, F] putting real frames in ascending frame-index order, then padding.

    frame_indices [B, F] int64; valid [B, F] bool or None. Stable: ties keep slot order.
    """
    perm = torch.sort(frame_indices, dim=1, stable=True).indices  # [B, F] by index
    if valid is None:
        return perm
    is_pad = (~valid).gather(1, perm).to(torch.int8)  # [B, F] 0 = real, 1 = padding
    return perm.gather(1, torch.sort(is_pad, dim=1, stable=True).indices)  # real first, each by index


@dataclass
class TemporalContext:
    """What every temporal layer of one forward needs; derived tensors are computed once, on use."""

    batch: int
    frames: int
    frame_indices: torch.Tensor  # [B, F] int64, absolute indices in the long video
    valid: torch.Tensor | None  # [B, F] bool, False on padding slots; None = no padding

    def __post_init__(self):
        if self.valid is not None and bool(self.valid.all()):
            self.valid = None  # no padding: every layer may take its unmasked path

    @cached_property
    def mask(self) -> torch.Tensor | None:
        """[B, F, F] bool, True where query i may attend key j (same kind: real/padding)."""
        return padding_mask(self.valid)

    @cached_property
    def order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(perm, inverse) [B, F]: slots sorted as by `frame_order`, and the permutation back."""
        perm = frame_order(self.frame_indices, self.valid)
        return perm, torch.argsort(perm, dim=1)


class TemporalLayer(nn.Module):
    """Base of temporal layers (the UNet feeds them the TemporalContext): x [B*F, C, H, W] -> same."""

    def forward(self, x: torch.Tensor, ctx: TemporalContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


# ---- "attn": temporal attention with relative position bias (VDM) ----------------------------


def relative_buckets(d: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket ids in [0, num_buckets) of signed frame distances d (int64, any shape).

    Half the buckets per sign (d <= 0 first, then d > 0); within a half, |d| below `num_buckets // 4`
    has its own bucket, larger |d| share log-spaced buckets up to `max_distance`, beyond which
    distances are clipped to the last bucket (T5's scheme, bidirectional).
    """
    half = num_buckets // 2
    exact = half // 2
    a = d.abs()
    log_ratio = torch.log(a.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)  # long() floors: log_ratio >= 0 here
    return torch.where(a < exact, a, far) + (d > 0).long() * half


class RelativePositionBias(nn.Module):
    """frame_indices [B, F] -> attention bias [B, n, F, F], one learned value per head per bucket."""

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.table = nn.Embedding(num_buckets, num_heads)
        # Zero: attention starts order-blind (uniform over frames), like FDM's zero-initialised
        # relative encodings; the bias is learned from there.
        nn.init.zeros_(self.table.weight)

    def forward(self, frame_indices: torch.Tensor) -> torch.Tensor:
        d = frame_indices[:, :, None] - frame_indices[:, None, :]  # [B, F, F] query minus key
        bias = self.table(relative_buckets(d, self.num_buckets, self.max_distance))  # [B, F, F, n]
        return rearrange(bias, "b i j n -> b n i j")


class RelativeTemporalAttention(TemporalLayer):
    """Pre-norm residual multi-head attention across frames, scores + relative position bias."""

    def __init__(self, channels: int, num_heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.bias = RelativePositionBias(num_heads, num_buckets, max_distance)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, ctx: TemporalContext) -> torch.Tensor:
        H = x.shape[-2]
        h = rearrange(self.norm(x), "(b f) c h w -> b f (h w) c", b=ctx.batch)  # [B, F, S, C]
        q, k, v = rearrange(self.qkv(h), "b f s (three n d) -> three b s n f d", three=3, n=self.num_heads)
        bias = self.bias(ctx.frame_indices).to(q.dtype)  # [B, n, F, F]
        if ctx.mask is not None:
            bias = bias.masked_fill(~ctx.mask[:, None], float("-inf"))  # padding <-> real blocked
        # The bias is shared by every spatial position: broadcast over S, not copied.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])  # [B, S, n, F, D]
        out = self.proj(rearrange(out, "b s n f d -> b f s (n d)"))  # [B, F, S, C]
        return rearrange(out, "b f (h w) c -> (b f) c h w", h=H).add_(x)


@TEMPORAL_LAYERS.register("attn")
def attention_layer(channels: int, config) -> TemporalLayer:
    """VDM temporal attention: `config.num_heads` heads, `config.rel_buckets` buckets to
    `config.rel_max_distance` frames."""
    return RelativeTemporalAttention(channels, config.num_heads, config.rel_buckets, config.rel_max_distance)


# ---- "bi-s4d": bidirectional S4D (SSM) --------------------------------------------------------


class BiS4DTemporal(TemporalLayer):
    """Pre-norm residual bidirectional S4D over frames in frame-index order (module doc)."""

    def __init__(self, channels: int, mixer: nn.Module):
        super().__init__()
        self.norm = group_norm(channels)
        self.mixer = mixer  # ssm_layers.BiS4D: mix([N, F, C]) -> [N, F, C]
        zero_module(mixer.fc2)  # the residual branch starts at zero, like every other in the UNet

    def forward(self, x: torch.Tensor, ctx: TemporalContext) -> torch.Tensor:
        H = x.shape[-2]
        perm, inverse = ctx.order
        h = rearrange(self.norm(x), "(b f) c h w -> b f (h w) c", b=ctx.batch)  # [B, F, S, C]
        h = torch.take_along_dim(h, perm[:, :, None, None], dim=1)  # [B, F, S, C] in index order
        seq = rearrange(h, "b f s c -> (b s) f c")  # [B*S, F, C]
        if ctx.valid is None:
            y = self.mixer.mix(seq)  # [B*S, F, C]
        else:
            real = ctx.valid.gather(1, perm)  # [B, F], True first
            real = rearrange(real, "b f -> b 1 f 1").expand(-1, h.shape[2], -1, -1).reshape(-1, ctx.frames, 1)
            both = self.mixer.mix(torch.cat([seq * real, seq * ~real]))  # [2*B*S, F, C]
            y = torch.where(real, *both.chunk(2))  # real slots from the real-only scan
        y = rearrange(y, "(b s) f c -> b f s c", b=ctx.batch)
        y = torch.take_along_dim(y, inverse[:, :, None, None], dim=1)  # back to slot order
        return rearrange(y, "b f (h w) c -> (b f) c h w", h=H) + x


@TEMPORAL_LAYERS.register("bi-s4d")
def bi_s4d_layer(channels: int, config) -> TemporalLayer:
    """SSM temporal layer: BiS4D(channels, `config.ssm_state_size`, `config.ssm_mlp_hidden`,
    `config.ssm_mix`)."""
    mixer = BiS4D(BiS4DConfig(channels, config.ssm_state_size, config.ssm_mlp_hidden, config.ssm_mix))
    return BiS4DTemporal(channels, mixer)


def build_temporal_layer(name: str, channels: int, config) -> TemporalLayer:
    """The temporal layer registered as `name` for `channels` channels (FdmError if unknown)."""
    return TEMPORAL_LAYERS.get(name)(channels, config)
