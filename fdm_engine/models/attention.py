"""FDM attention: temporal attention with contextual relative position encodings, spatial attention.

Temporal attention (tokens = the F frames at one spatial position). Frame order enters only through
a relative encoding R [B, heads, F, F, D] of d_ij = frame_index[i] - frame_index[j]:

    feats_ij = [log(1 + max(d_ij, 0)), log(1 + max(-d_ij, 0)), 1 if d_ij == 0 else 0]
    R_ij     = W_out SiLU(W_d feats_ij + W_t emb_i)        (W_out zero-initialised)

where emb_i is the time embedding of the *query* frame i (so R knows the query's noise level;
per-frame levels stay per-frame). With 1/sqrt(D) scaling, the Shaw-style contextual terms are

    score_ij = (q_i . k_j + q_i . R_ij + R_ij . k_j) / sqrt(D)
    out_i    = sum_j softmax_j(score_i)_j (v_j + R_ij)

R does not depend on the spatial position, so it is computed once per (batch, query, key) pair and
shared by every position. While R is exactly zero (the zero-initialised net, not training) the
relative terms vanish and the computation is plain attention (SDPA on CPU, the Triton kernel on CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.models.blocks import group_norm, zero_module
# One implementation of the math, dispatched to SDPA on CPU and the fused Triton kernel on CUDA.
from kernels.temporal_attention import temporal_attention, temporal_attention_ref  # noqa: F401


@dataclass
class FrameContext:
    """Per-call frame information shared by every attention block of one forward."""

    batch: int
    frames: int
    emb: torch.Tensor  # [B, F, E] per-frame time embedding
    rel_feats: torch.Tensor  # [B, F, F, 3] relative-distance features
    mask: torch.Tensor | None  # [B, F, F] bool, True where query i may attend key j; None = all
    valid: torch.Tensor | None = None  # [B, F] bool, False on padding slots; None when there are none


def relative_features(frame_indices: torch.Tensor) -> torch.Tensor:
    """[B, F] int64 frame indices -> [B, F, F, 3] features of d_ij = idx_i - idx_j (see module doc)."""
    d = frame_indices[:, :, None] - frame_indices[:, None, :]  # [B, F, F] int64, exact
    df = d.float()
    return torch.stack([torch.log1p(df.clamp(min=0)), torch.log1p((-df).clamp(min=0)), (d == 0).float()], dim=-1)


def padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """valid [B, F] bool -> [B, F, F] mask where slots attend only to slots of their own kind.

    Padding attends only to padding and real frames only to real frames; None when all are valid.
    """
    if valid is None or bool(valid.all()):
        return None
    return valid[:, :, None] == valid[:, None, :]  # [B, F, F]


class RelativePositionNet(nn.Module):
    """features [B, F, F, 3] and query time embedding [B, F, E] -> R [B, F, F, C] (zero at init)."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.dist = nn.Linear(3, channels)
        self.time = nn.Linear(embed_dim, channels)
        self.out = zero_module(nn.Linear(channels, channels))

    def vanishes(self) -> bool:
        """True when R is identically zero and no gradient is wanted, so it may be skipped."""
        if torch.is_grad_enabled() and (self.out.weight.requires_grad or self.out.bias.requires_grad):
            return False  # R = 0 still has a non-zero gradient w.r.t. the output layer
        return not (bool(self.out.weight.any()) or bool(self.out.bias.any()))

    def forward(self, feats: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.dist(feats.to(self.dist.weight.dtype)) + self.time(emb)[:, :, None, :]  # [B, F, F, C]; query emb over keys
        return self.out(F.silu(h))  # [B, F, F, C]


class TemporalAttention(nn.Module):
    """Pre-norm residual attention across frames at each spatial position."""

    def __init__(self, channels: int, num_heads: int, embed_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel = RelativePositionNet(channels, embed_dim)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        H = x.shape[-2]
        # Linear layers run on [B, F, S, C], a free view of channels-last activations.
        h = rearrange(self.norm(x), "(b f) c h w -> b f (h w) c", b=ctx.batch)  # [B, F, S, C]
        q, k, v = rearrange(self.qkv(h), "b f s (three n d) -> three b s n f d", three=3, n=self.num_heads)
        rel = None
        if not self.rel.vanishes():
            rel = rearrange(self.rel(ctx.rel_feats, ctx.emb), "b i j (n d) -> b n i j d", n=self.num_heads)
        out = temporal_attention(q, k, v, rel, ctx.mask)  # [B, S, n, F, D]
        out = self.proj(rearrange(out, "b s n f d -> b f s (n d)"))  # [B, F, S, C]
        return rearrange(out, "b f (h w) c -> (b f) c h w", h=H).add_(x)


class SpatialAttention(nn.Module):
    """Pre-norm residual attention across the H*W positions of each frame."""

    residual_from_norm = False  # True: out = norm(x) + attn (the published FDM form)

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H = x.shape[-2]
        normed = self.norm(x)
        h = rearrange(normed, "n c h w -> n (h w) c")  # [N, S, C]
        q, k, v = rearrange(self.qkv(h), "n s (three h d) -> three n h s d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, n, S, D]
        out = self.proj(rearrange(out, "n h s d -> n s (h d)"))  # [N, S, C]
        return rearrange(out, "n (h w) c -> n c h w", h=H).add_(normed if self.residual_from_norm else x)


class AttentionBlock(nn.Module):
    """Temporal attention then spatial attention, both pre-norm residual. x [B*F, C, H, W]."""

    temporal_cls, spatial_cls = TemporalAttention, SpatialAttention  # variants subclass with others

    def __init__(self, channels: int, num_heads: int, embed_dim: int):
        super().__init__()
        self.temporal = self.temporal_cls(channels, num_heads, embed_dim)
        self.spatial = self.spatial_cls(channels, num_heads)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        return self.spatial(self.temporal(x, ctx))
