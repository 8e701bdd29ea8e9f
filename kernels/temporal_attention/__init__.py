"""Temporal attention with contextual relative position encodings (the FDM denoiser's, docs/architectures.md).

    score_ij = (q_i.k_j + q_i.R_ij + R_ij.k_j) / sqrt(D)   (masked),   out_i = sum_j p_ij (v_j + R_ij)

q, k, v [B, S, n, F, D] (S spatial positions, n heads, F frames); R = rel [B, n, F, F, D] shared
by the positions; mask [B, F, F] bool. Implementations with one signature:

- `ref.py`    `temporal_attention_ref`: einsum with a materialised softmax (the published form).
- `cpu.py`    here: `F.scaled_dot_product_attention` when rel is None, else the reference.
- `triton.py` `temporal_attention_triton`: flash-style fused kernels, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.dispatch import pick
from kernels.temporal_attention.args import check_attention_args
from kernels.temporal_attention.ref import temporal_attention_ref

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def temporal_attention_cpu(q, k, v, rel=None, mask=None):
    """SDPA (fused, no [F, F] probabilities kept on CPU either) without relative terms, else the reference."""
    check_attention_args(q, k, v, rel, mask)
    if rel is not None:
        return temporal_attention_ref(q, k, v, rel, mask)
    B, S, n, Fr, D = q.shape
    attn_mask = None if mask is None else mask[:, None]  # [B, 1, F, F]
    out = F.scaled_dot_product_attention(
        q.reshape(B, S * n, Fr, D), k.reshape(B, S * n, Fr, D), v.reshape(B, S * n, Fr, D), attn_mask=attn_mask
    )  # [B, S*n, F, D]
    return out.view(B, S, n, Fr, D)


def _temporal_attention_triton(q, k, v, rel=None, mask=None):
    from kernels.temporal_attention.triton import temporal_attention_triton  # lazy: imports triton

    return temporal_attention_triton(q, k, v, rel, mask)


IMPLEMENTATIONS = {"ref": temporal_attention_ref, "triton": _temporal_attention_triton, "cpu": temporal_attention_cpu}


def temporal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """Temporal attention with relative encodings (module doc). Returns [B, S, n, F, D].

    `impl`: "ref" | "triton" | "cpu" | None (triton for CUDA fp16/bf16/fp32 tensors, else cpu;
    env FDM_KERNELS). The Triton path is taken for rel=None too (plain masked flash attention).
    """
    check_attention_args(q, k, v, rel, mask)
    dtypes_ok = q.dtype in TRITON_DTYPES and (rel is None or rel.dtype == q.dtype)
    fn = pick("temporal_attention", IMPLEMENTATIONS, impl, q.device, dtypes_ok)
    return fn(q, k, v, rel, mask)


__all__ = ["temporal_attention", "temporal_attention_ref", "temporal_attention_cpu", "IMPLEMENTATIONS"]
