"""Fused temporal attention with contextual relative encodings: Triton kernels, flash-style.

Imported only when the ``triton`` implementation is asked for.

Math (the reference `temporal_attention_ref`): for each batch b, spatial position s and head,
with R = rel[b, head] shared by every position,

    score_ij = scale * (q_i.k_j + q_i.R_ij + R_ij.k_j) = scale * (q_i.k_j + R_ij.(q_i + k_j))
    p_ij     = softmax_j(score_ij) over the keys the mask allows
    out_i    = sum_j p_ij (v_j + R_ij)

What is fused and what is not (the design decision):
- Never built: the [B, S, n, F, F] scores and probabilities (S times the size of R, and the bulk
  of the published implementation's memory), nor any per-position copy of R. Each program keeps a
  BLOCK_M x BLOCK_N tile of scores in registers and runs an online softmax over key tiles
  (running max m, normaliser l, rescaled accumulator), as in FlashAttention.
- The relative terms are three reductions against one [BLOCK_M, BLOCK_N, D] tile of R loaded
  next to the k/v tiles: R.(q+k) for the scores and sum_j p_ij R_ij for the output. They are
  elementwise-and-reduce on the tile (not tensor-core dots: R differs per (i, j) pair).
- R itself is an input, built once per batch by the relative-position net (Linear(3, C) on the
  features [log(1+max(d,0)), log(1+max(-d,0)), d==0] + Linear(emb), SiLU, zero-init Linear(C, C)).
  Computing it inside this kernel from the frame indices would avoid its B x F x F x C buffer but
  repeat the C x C output Linear for every spatial position and head, S*n times the FLOPs of
  building it once; R is C/(S*n) the size of one score tensor (F = 20, S = 256, C = 512 in FDM:
  R ~ 0.8 MB per sample), so it is read from memory, and shared across positions through the L2.
- Masking: the padding mask is a [B, F, F] bool tile (int8) loaded per block; masked scores are
  -inf. A query row with no allowed key gives zeros here (the reference gives NaN).

Backward (recomputes p from the saved log-sum-exp, never stores it):
    dP_ij = dO_i.(v_j + R_ij),  dS_ij = p_ij (dP_ij - Delta_i),  Delta_i = dO_i.out_i
    dq_i = scale sum_j dS_ij (k_j + R_ij)      kernel `_bwd_dq`    (one program per query tile)
    dk_j = scale sum_i dS_ij (q_i + R_ij)      kernel `_bwd_dkdv`  (one program per key tile)
    dv_j = sum_i p_ij dO_i
    dR_ij = sum_s [scale dS_ij (q_i + k_j) + p_ij dO_i]   kernel `_bwd_drel`: one program per
            (b, head, query tile, key tile) loops over the S positions, so the sum over positions
            happens in registers, without atomics, deterministically.

Numerics: scores in float32 in the log2 domain (exp2), accumulators float32, storage in the input
dtype (fp16, bf16, fp32). fp32 dots use TF32 exactly when torch.backends.cuda.matmul.allow_tf32
is set, so the kernel matches what the reference einsums would do on that GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.temporal_attention.args import check_attention_args
from kernels.tensors import resolved

LOG2E = 1.4426950408889634
DEFAULT_BLOCK = 16  # query and key tile; R tiles are BLOCK x BLOCK x D, so keep them small


@triton.jit
def _scores(q, k, r, sm_scale_log2, offs_m, offs_n, F, mask_ptrs, HAS_REL: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr):
    """[BM, BN] scores in log2 units (-inf where not allowed) for tiles q [BM, D], k [BN, D], r [BM, BN, D]."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
    if HAS_REL:
        qk = q.to(tl.float32)[:, None, :] + k.to(tl.float32)[None, :, :]
        s += tl.sum(r * qk, axis=2)
    s = s * sm_scale_log2
    ok = (offs_n[None, :] < F) & (offs_m[:, None] >= 0)
    if HAS_MASK:
        allowed = tl.load(mask_ptrs, mask=(offs_m[:, None] < F) & (offs_n[None, :] < F), other=0)
        ok = ok & (allowed != 0)
    return tl.where(ok, s, float("-inf"))


@triton.jit
def _fwd(
    Q, K, V, R, MASK, O, LSE,
    S, NH, F, D, sm_scale_log2,
    HAS_REL: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    z = tl.program_id(1)  # flat (b, s, head)
    b = z // (S * NH)
    head = z % NH
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < F
    d_ok = offs_d < D
    base = z.to(tl.int64) * F * D
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    r_base = R + (b * NH + head).to(tl.int64) * F * F * D
    mask_base = MASK + b.to(tl.int64) * F * F
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, F, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < F
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        r = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_D], tl.float32)
        if HAS_REL:
            r_ptrs = r_base + (offs_m[:, None, None] * F + offs_n[None, :, None]) * D + offs_d[None, None, :]
            r_mask = m_ok[:, None, None] & n_ok[None, :, None] & d_ok[None, None, :]
            r = tl.load(r_ptrs, mask=r_mask, other=0.0).to(tl.float32)
        s = _scores(q, k, r, sm_scale_log2, offs_m, offs_n, F, mask_base + offs_m[:, None] * F + offs_n[None, :],
                    HAS_REL, HAS_MASK, DOT_PREC)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        if HAS_REL:
            acc += tl.sum(p[:, :, None] * r, axis=1)
        m_i = m_new
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    tl.store(O + base + offs_m[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))  # +inf: p = 0 in backward
    tl.store(LSE + z.to(tl.int64) * F + offs_m, lse, mask=m_ok)


@triton.jit
def _bwd_dkdv(
    Q, K, V, R, MASK, DO, LSE, DELTA, DK, DV,
    S, NH, F, D, sm_scale, sm_scale_log2,
    HAS_REL: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    z = tl.program_id(1)
    b = z // (S * NH)
    head = z % NH
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < F
    d_ok = offs_d < D
    base = z.to(tl.int64) * F * D
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
    r_base = R + (b * NH + head).to(tl.int64) * F * F * D
    mask_base = MASK + b.to(tl.int64) * F * F
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, F, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < F
        q_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        lse = tl.load(LSE + z.to(tl.int64) * F + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + z.to(tl.int64) * F + offs_m, mask=m_ok, other=0.0)
        r = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_D], tl.float32)
        if HAS_REL:
            r_ptrs = r_base + (offs_m[:, None, None] * F + offs_n[None, :, None]) * D + offs_d[None, None, :]
            r_mask = m_ok[:, None, None] & n_ok[None, :, None] & d_ok[None, None, :]
            r = tl.load(r_ptrs, mask=r_mask, other=0.0).to(tl.float32)
        s = _scores(q, k, r, sm_scale_log2, offs_m, offs_n, F, mask_base + offs_m[:, None] * F + offs_n[None, :],
                    HAS_REL, HAS_MASK, DOT_PREC)
        p = tl.math.exp2(s - lse[:, None])  # [BM, BN]
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=DOT_PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        if HAS_REL:
            dp += tl.sum(do.to(tl.float32)[:, None, :] * r, axis=2)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=DOT_PREC)
        if HAS_REL:
            dk += tl.sum(ds[:, :, None] * r, axis=0)
    tl.store(DK + base + offs_n[:, None] * D + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + base + offs_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq(
    Q, K, V, R, MASK, DO, LSE, DELTA, DQ,
    S, NH, F, D, sm_scale, sm_scale_log2,
    HAS_REL: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    z = tl.program_id(1)
    b = z // (S * NH)
    head = z % NH
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < F
    d_ok = offs_d < D
    base = z.to(tl.int64) * F * D
    q_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
    lse = tl.load(LSE + z.to(tl.int64) * F + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + z.to(tl.int64) * F + offs_m, mask=m_ok, other=0.0)
    r_base = R + (b * NH + head).to(tl.int64) * F * F * D
    mask_base = MASK + b.to(tl.int64) * F * F
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, F, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < F
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        r = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_D], tl.float32)
        if HAS_REL:
            r_ptrs = r_base + (offs_m[:, None, None] * F + offs_n[None, :, None]) * D + offs_d[None, None, :]
            r_mask = m_ok[:, None, None] & n_ok[None, :, None] & d_ok[None, None, :]
            r = tl.load(r_ptrs, mask=r_mask, other=0.0).to(tl.float32)
        s = _scores(q, k, r, sm_scale_log2, offs_m, offs_n, F, mask_base + offs_m[:, None] * F + offs_n[None, :],
                    HAS_REL, HAS_MASK, DOT_PREC)
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        if HAS_REL:
            dp += tl.sum(do.to(tl.float32)[:, None, :] * r, axis=2)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
        if HAS_REL:
            dq += tl.sum(ds[:, :, None] * r, axis=1)
    tl.store(DQ + base + offs_m[:, None] * D + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit
def _bwd_drel(
    Q, K, V, R, MASK, DO, LSE, DELTA, DR,
    S, NH, F, D, sm_scale, sm_scale_log2,
    HAS_MASK: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    bh = tl.program_id(2)  # flat (b, head)
    b = bh // NH
    head = bh % NH
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < F
    n_ok = offs_n < F
    d_ok = offs_d < D
    r_off = bh.to(tl.int64) * F * F * D + (offs_m[:, None, None] * F + offs_n[None, :, None]) * D + offs_d[None, None, :]
    r_mask = m_ok[:, None, None] & n_ok[None, :, None] & d_ok[None, None, :]
    r = tl.load(R + r_off, mask=r_mask, other=0.0).to(tl.float32)  # loaded once, reused for every position
    mask_ptrs = MASK + b.to(tl.int64) * F * F + offs_m[:, None] * F + offs_n[None, :]
    q_mask = m_ok[:, None] & d_ok[None, :]
    kv_mask = n_ok[:, None] & d_ok[None, :]
    dr = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_D], tl.float32)
    for s_pos in range(0, S):
        z = (b * S + s_pos) * NH + head
        base = z.to(tl.int64) * F * D
        q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + base + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0)
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        lse = tl.load(LSE + z.to(tl.int64) * F + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + z.to(tl.int64) * F + offs_m, mask=m_ok, other=0.0)
        s = _scores(q, k, r, sm_scale_log2, offs_m, offs_n, F, mask_ptrs, True, HAS_MASK, DOT_PREC)
        p = tl.math.exp2(s - lse[:, None])
        do32 = do.to(tl.float32)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC) + tl.sum(do32[:, None, :] * r, axis=2)
        ds = p * (dp - delta[:, None])
        qk = q.to(tl.float32)[:, None, :] + k.to(tl.float32)[None, :, :]
        dr += (ds * sm_scale)[:, :, None] * qk + p[:, :, None] * do32[:, None, :]
    tl.store(DR + r_off, dr.to(DR.dtype.element_ty), mask=r_mask)


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


class _TemporalAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rel, mask, block_m, block_n):
        B, S, NH, F, D = q.shape
        q, k, v = (resolved(t).contiguous() for t in (q, k, v))
        has_rel, has_mask = rel is not None, mask is not None
        rel_c = resolved(rel).contiguous() if has_rel else q  # dummy pointer when absent (never read)
        mask_c = mask.to(torch.int8).contiguous() if has_mask else q
        o = torch.empty_like(q)
        lse = torch.empty(B * S * NH, F, device=q.device, dtype=torch.float32)
        block_d = max(16, triton.next_power_of_2(D))
        scale = D**-0.5
        _fwd[(triton.cdiv(F, block_m), B * S * NH)](
            q, k, v, rel_c, mask_c, o, lse, S, NH, F, D, scale * LOG2E,
            HAS_REL=has_rel, HAS_MASK=has_mask, DOT_PREC=_dot_precision(q.dtype),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        )
        ctx.save_for_backward(q, k, v, rel_c, mask_c, o, lse)
        ctx.cfg = (has_rel, has_mask, block_m, block_n, block_d, rel.dtype if has_rel else None)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, rel_c, mask_c, o, lse = ctx.saved_tensors
        has_rel, has_mask, block_m, block_n, block_d, rel_dtype = ctx.cfg
        B, S, NH, F, D = q.shape
        do = resolved(do).contiguous().to(q.dtype)
        delta = (do.float() * o.float()).sum(-1).reshape(B * S * NH, F)  # Delta_i = dO_i . out_i
        scale = D**-0.5
        common = dict(HAS_MASK=has_mask, DOT_PREC=_dot_precision(q.dtype), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        args = (S, NH, F, D, scale, scale * LOG2E)
        _bwd_dkdv[(triton.cdiv(F, block_n), B * S * NH)](
            q, k, v, rel_c, mask_c, do, lse, delta, dk, dv, *args, HAS_REL=has_rel, **common
        )
        _bwd_dq[(triton.cdiv(F, block_m), B * S * NH)](q, k, v, rel_c, mask_c, do, lse, delta, dq, *args, HAS_REL=has_rel, **common)
        drel = None
        if has_rel and ctx.needs_input_grad[3]:
            drel = torch.empty(B, NH, F, F, D, device=q.device, dtype=rel_dtype)
            _bwd_drel[(triton.cdiv(F, block_m), triton.cdiv(F, block_n), B * NH)](
                q, k, v, rel_c, mask_c, do, lse, delta, drel, *args, **common
            )
        return dq, dk, dv, drel, None, None, None


def temporal_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    block_m: int = DEFAULT_BLOCK,
    block_n: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """Fused temporal attention (module doc); signature and shapes of `temporal_attention_ref`.

    q, k, v [B, S, n, F, D] of one float dtype (fp16, bf16, fp32); rel [B, n, F, F, D] in that dtype
    or None; mask [B, F, F] bool or None. Returns [B, S, n, F, D]. Differentiable in q, k, v, rel.
    `block_m`, `block_n`: query / key tile sizes (powers of two, >= 16 for the GPU's dot units).
    """
    check_attention_args(q, k, v, rel, mask)
    if rel is not None:
        rel = rel.to(q.dtype)
    return _TemporalAttentionTriton.apply(q, k, v, rel, mask, block_m, block_n)
