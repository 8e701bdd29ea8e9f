"""Reference twin of the fused temporal attention: the math of fdm_engine.models.attention written
with einsum and a materialised softmax (kept independent of that module: kernels sit upstream of
the models; tests check the two agree)."""

from __future__ import annotations

import torch

from kernels.temporal_attention.args import check_attention_args


def temporal_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """score_ij = (q_i.k_j + q_i.R_ij + R_ij.k_j) / sqrt(D), masked; out_i = sum_j p_ij (v_j + R_ij).

    q, k, v [B, S, n, F, D]; rel [B, n, F, F, D] or None (= 0); mask [B, F, F] bool (True = query i
    may attend key j) or None. Returns [B, S, n, F, D]. Materialises [B, S, n, F, F] scores.
    """
    check_attention_args(q, k, v, rel, mask)
    scale = q.shape[-1] ** -0.5
    scores = torch.einsum("bsnid,bsnjd->bsnij", q, k)  # [B, S, n, F, F]
    if rel is not None:
        scores = scores + torch.einsum("bsnid,bnijd->bsnij", q, rel) + torch.einsum("bnijd,bsnjd->bsnij", rel, k)
    scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    p = scores.softmax(dim=-1)  # [B, S, n, F, F]
    out = torch.einsum("bsnij,bsnjd->bsnid", p, v)  # [B, S, n, F, D]
    if rel is not None:
        out = out + torch.einsum("bsnij,bnijd->bsnid", p, rel)
    return out
