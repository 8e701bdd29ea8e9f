"""FDM attention as the published FDM code computes it (`FDMUNetConfig.attention = "published"`),
so a checkpoint trained by that code computes here exactly what it computed there.

It differs from our attention (fdm_engine.models.attention) in three ways:

- Residuals start from the *normalised* input: out = norm(x) + proj(attn(norm(x))), in both the
  temporal and the spatial attention.
- The temporal norm is a GroupNorm over (channel group, frames) at each spatial position, not over
  (channel group, H, W) of each frame.
- Keys, queries and values get separate relative-encoding nets R^k, R^q, R^v (each a
  RelativePositionNet of d_ij = frame_index[i] - frame_index[j] and the time embedding of the
  first index), and the query term uses R^q with its indices swapped:

      score_ij = (q_i . k_j + q_i . R^k_ij + k_j . R^q_ji) / sqrt(D)   (masked)
      out_i    = sum_j softmax_j(score_i)_j (v_j + R^v_ij)

Padding slots attend only among themselves (the same mask as ours) and are left out of the
temporal norm's statistics, so a job padded to share a batch computes what the published net
computes on that job's frames alone (the published sampler never padded).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from fdm_engine.models.attention import AttentionBlock, FrameContext, RelativePositionNet, SpatialAttention
from fdm_engine.models.blocks import group_norm, zero_module


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, keep: torch.Tensor) -> torch.Tensor:
    """`norm(x)` with statistics over the kept positions only. x [N, C, L]; keep [N, L] bool.

    Positions not kept are normalised with the kept ones' statistics (their values are unused).
    """
    N, C, L = x.shape
    G = norm.num_groups
    xg = x.float().view(N, G, C // G, L)
    w = keep.to(xg.dtype)[:, None, None, :]  # [N, 1, 1, L]
    count = w.sum(dim=-1, keepdim=True).clamp(min=1) * (C // G)  # [N, 1, 1, 1]
    mean = (xg * w).sum(dim=(2, 3), keepdim=True) / count
    var = ((xg - mean).square() * w).sum(dim=(2, 3), keepdim=True) / count  # biased, as GroupNorm
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).view(N, C, L).to(x.dtype)
    return y * norm.weight[:, None] + norm.bias[:, None]


class PublishedTemporalAttention(nn.Module):
    """Attention across frames at each spatial position, published form (module doc)."""

    def __init__(self, channels: int, num_heads: int, embed_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_q = RelativePositionNet(channels, embed_dim)
        self.rel_k = RelativePositionNet(channels, embed_dim)
        self.rel_v = RelativePositionNet(channels, embed_dim)
        self.proj = zero_module(nn.Linear(channels, channels))

    def _rel(self, net: RelativePositionNet, ctx: FrameContext) -> torch.Tensor:
        return rearrange(net(ctx.rel_feats, ctx.emb), "b i j (n d) -> b n i j d", n=self.num_heads)

    def forward(self, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        H = x.shape[-2]
        # GroupNorm over (channel group, frames) per position: frames play the spatial axis.
        h = rearrange(x, "(b f) c h w -> (b h w) c f", b=ctx.batch)  # [B*S, C, F]
        if ctx.valid is None:
            h = self.norm(h)
        else:
            h = masked_group_norm(h, self.norm, ctx.valid.repeat_interleave(h.shape[0] // ctx.batch, dim=0))
        h = rearrange(h, "(b s) c f -> b s f c", b=ctx.batch)  # [B, S, F, C]
        q, k, v = rearrange(self.qkv(h), "b s f (three n d) -> three b s n f d", three=3, n=self.num_heads)
        rk, rq, rv = (self._rel(net, ctx) for net in (self.rel_k, self.rel_q, self.rel_v))  # [B, n, F, F, D]
        score = (torch.einsum("bsnid,bsnjd->bsnij", q, k)
                 + torch.einsum("bsnid,bnijd->bsnij", q, rk)
                 + torch.einsum("bsnjd,bnjid->bsnij", k, rq)) * q.shape[-1] ** -0.5  # [B, S, n, F, F]
        if ctx.mask is not None:
            score = score.masked_fill(~ctx.mask[:, None, None], float("-inf"))
        p = score.float().softmax(dim=-1).to(q.dtype)
        out = torch.einsum("bsnij,bsnjd->bsnid", p, v) + torch.einsum("bsnij,bnijd->bsnid", p, rv)
        out = self.proj(rearrange(out, "b s n f d -> b s f (n d)"))  # [B, S, F, C]
        return rearrange(h + out, "b (h w) f c -> (b f) c h w", h=H)


class PublishedSpatialAttention(SpatialAttention):
    """Attention across the H*W positions of each frame, residual from the normalised input."""

    residual_from_norm = True


class PublishedAttentionBlock(AttentionBlock):
    """Temporal then spatial attention, published form. x [B*F, C, H, W]."""

    temporal_cls, spatial_cls = PublishedTemporalAttention, PublishedSpatialAttention
