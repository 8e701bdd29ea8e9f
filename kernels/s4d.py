"""S4D ops: the diagonal state-space convolution (Gu et al. 2022, "On the parameterization and
initialization of diagonal state space models") in its two exact forms. The layer that owns the
parameters (S4D, and the bidirectional BiS4D built from it) is fdm_engine.models.ssm_layers.

Per channel h (H channels) and mode n (N/2 complex modes; N = `state_size`):

    x'(t) = A_n x(t) + u(t),  y(t) = 2 Re sum_n C_n x_n(t) + D u(t)
    S4D-Lin init:   A_n = -1/2 + i pi n        (stored as log(-Re A) and Im A)
    step size:      log dt ~ U[log dt_min, log dt_max], one per channel
    zero-order hold: a_n = exp(dt A_n),  C~_n = C_n (exp(dt A_n) - 1) / A_n   (B folded into C~)

The discrete system h_t = a h_{t-1} + u_t, y_t = 2 Re sum_n C~_n h_{t,n} + D u_t has the
convolution kernel K_l = 2 Re sum_n C~_n a_n^l, so two exact forms of one layer:

- conv (`s4d_conv`, the published form and our reference): the Vandermonde kernel K [H, L]
  (materialising exp(dt A_n l) as H x N/2 x L complex numbers), then a causal FFT convolution of
  length 2L.
- scan (`s4d_scan`): the recurrence evaluated chunk by chunk (state passing, as in Mamba-2's
  chunked algorithm). With chunks of T steps:
      inside a chunk   y = K[:T] * u        (a short causal FFT convolution; K only up to T)
      chunk states     S_c = sum_s a^(T-1-s) u_{c,s}           [B, H, N/2] per chunk (a matmul)
      across chunks    H_c = a^T H_{c-1} + S_c                   `kernels.diag_scan`, nc = L/T steps
      carried in       y_{c,t} += 2 Re sum_n C~_n a_n^(t+1) H_{c-1,n}   (a matmul)
  Nothing of size H x N/2 x L is built: the powers a^l are needed only for l < T (as the outer
  product of two sqrt(T) tables, and the in-chunk kernel as one small matmul per channel without
  even the H x N/2 x T table), the states only at chunk boundaries (B x H x N/2 x L/T). Autograd
  keeps only u: backward recomputes the chunk states block of rows by block of rows (as Mamba's
  scan recomputes its states), so the extra memory is one block's states plus the tables, and
  memory is linear in L with a small constant. With L <= T there is a single chunk and no scan.

Layout: u, y are [B, H, L] (channels first, the FFT axis last).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kernels.diag_scan import diag_scan


def discretize(log_dt, log_A_real, A_imag, C):
    """ZOH discretisation. log_dt [H]; log_A_real, A_imag [H, N2]; C [H, N2] complex.

    Returns dtA [H, N2] complex (a = exp(dtA)) and C~ [H, N2] complex = C (exp(dtA) - 1) / A.
    """
    A = torch.complex(-torch.exp(log_A_real), A_imag)  # [H, N2]
    dtA = A * torch.exp(log_dt)[:, None]  # [H, N2]
    return dtA, C * torch.expm1(dtA) / A


def s4d_kernel(dtA: torch.Tensor, Ct: torch.Tensor, L: int) -> torch.Tensor:
    """Vandermonde kernel K [H, L], K_l = 2 Re sum_n C~_n exp(dtA_n l). Builds [H, N2, L] complex."""
    powers = torch.exp(dtA[:, :, None] * torch.arange(L, device=dtA.device, dtype=dtA.real.dtype))  # [H, N2, L]
    return 2 * torch.einsum("hn,hnl->hl", Ct, powers).real  # [H, L]


def causal_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} k_{t-s} u_s along the last axis. u [..., L], k [..., L] broadcastable -> [..., L]."""
    L = u.shape[-1]
    n = 2 * L  # zero padding to 2L turns the FFT's circular convolution into a linear one
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :L]


def s4d_conv(u: torch.Tensor, dtA: torch.Tensor, Ct: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Convolution form (reference). u [B, H, L] real; dtA, Ct [H, N2] complex; D [H] -> y [B, H, L]."""
    K = s4d_kernel(dtA, Ct, u.shape[-1])  # [H, L]
    return causal_fft_conv(u, K) + D[:, None] * u


def mode_powers(dtA: torch.Tensor, L: int) -> torch.Tensor:
    """a_n^l = exp(dtA_n l) for l < L, [H, N2, L] complex, as an outer product of two short tables
    (a^(T1 i) times a^j, l = T1 i + j, T1 ~ sqrt(L)): 2 sqrt(L) exponentials per mode instead of L."""
    T1 = max(1, math.isqrt(L - 1) + 1) if L > 1 else 1
    nb = -(-L // T1)
    steps = torch.arange(max(T1, nb), device=dtA.device, dtype=dtA.real.dtype)
    small = torch.exp(dtA[:, :, None] * steps[:T1])  # [H, N2, T1]  a^j
    big = torch.exp(dtA[:, :, None] * (T1 * steps[:nb]))  # [H, N2, nb]  a^(T1 i)
    return (big[:, :, :, None] * small[:, :, None, :]).flatten(2)[:, :, :L]  # [H, N2, L]


def factored_kernel(dtA: torch.Tensor, Ct: torch.Tensor, L: int) -> torch.Tensor:
    """The Vandermonde kernel K [H, L] of `s4d_kernel` without building [H, N2, L]: with
    l = T1 i + j, K[T1 i + j] = 2 Re sum_n (C~_n a_n^(T1 i)) a_n^j, one [nb, N2] x [N2, T1] matmul
    per channel (real arithmetic: Re(x y) = [Re x, -Im x] . [Re y, Im y])."""
    H = dtA.shape[0]
    T1 = max(1, math.isqrt(L - 1) + 1) if L > 1 else 1
    nb = -(-L // T1)
    steps = torch.arange(max(T1, nb), device=dtA.device, dtype=dtA.real.dtype)
    small = torch.exp(dtA[:, :, None] * steps[:T1])  # [H, N2, T1]
    left = Ct[:, :, None] * torch.exp(dtA[:, :, None] * (T1 * steps[:nb]))  # [H, N2, nb]
    lhs = torch.cat([left.real, -left.imag], dim=1).transpose(1, 2)  # [H, nb, 2*N2]
    rhs = torch.cat([small.real, small.imag], dim=1)  # [H, 2*N2, T1]
    return 2 * torch.bmm(lhs, rhs).reshape(H, nb * T1)[:, :L]  # [H, L]


DEFAULT_CHUNK = 64


def auto_chunk(L: int) -> int:
    """Default chunk length: 64 steps (the per-chunk tables are H x N/2 x T and row blocks keep the
    chunk states small; the state work, 4 B H N/2 L multiply-adds, does not depend on T), fewer
    when the sequence is shorter. chunk >= L means one chunk: an FFT convolution, no scan."""
    return min(DEFAULT_CHUNK, L)


def scan_tables(dtA: torch.Tensor, Ct: torch.Tensor, T: int, with_states: bool):
    """Per-chunk tables, all batch-independent: K [H, T] (the in-chunk kernel) and, for the
    cross-chunk part, W [H, T, 2*N2] with (Re, Im) of a_n^(T-1-s) interleaved along the last axis,
    V [H, 2*N2, T] with rows (2 Re, -2 Im) of C~_n a_n^(t+1) interleaved, and aT [H*N2] = a^T."""
    K = factored_kernel(dtA, Ct, T)
    if not with_states:
        return K, None, None, None
    H, N2 = dtA.shape
    P = mode_powers(dtA, T)  # [H, N2, T]  a^0 .. a^(T-1)
    W = torch.view_as_real(P.flip(-1).transpose(1, 2).contiguous()).reshape(H, T, 2 * N2)
    V = (Ct * torch.exp(dtA))[:, :, None] * P  # [H, N2, T]
    V = torch.stack([2 * V.real, -2 * V.imag], dim=2).reshape(H, 2 * N2, T)
    return K, W, V, torch.exp(dtA * T).reshape(-1)


def scan_apply(uc: torch.Tensor, D: torch.Tensor, tables, impl: str | None) -> torch.Tensor:
    """The chunked scan on uc [b, H, nc, T] with precomputed `scan_tables` -> y [b, H, nc, T]."""
    K, W, V, aT = tables
    b, H, nc, T = uc.shape
    y = causal_fft_conv(uc, K[:, None, :]) + D[:, None, None] * uc  # in-chunk part
    if nc > 1:
        N2 = W.shape[-1] // 2
        S = torch.einsum("bhct,htk->bhck", uc, W)  # [b, H, nc, 2*N2] chunk-end states, (re, im) pairs
        S = torch.view_as_complex(S.view(b, H, nc, N2, 2)).permute(0, 1, 3, 2).reshape(b, H * N2, nc)
        Hs = diag_scan(aT[None, :, None], S, impl=impl).view(b, H, N2, nc)  # a^T broadcast, never copied
        Hin = torch.view_as_real(Hs[..., :-1].transpose(2, 3))  # [b, H, nc-1, N2, 2] states entering chunks 1..
        carried = torch.einsum("bhck,hkt->bhct", Hin.reshape(b, H, nc - 1, 2 * N2), V)  # 2 Re sum_n C~ a^(t+1) H
        y = torch.cat([y[:, :, :1], y[:, :, 1:] + carried], dim=2)
    return y


def _row_block(B: int, H: int, N2: int, nc: int, T: int) -> int:
    # Rows per block so one block's chunk states and FFT buffers hold about 2^21 numbers (16 MiB).
    per_row = H * (N2 * (nc - 1) + nc * (T + 1) * 2)
    return max(1, min(B, (1 << 21) // per_row))


class _S4DScan(torch.autograd.Function):
    """Saves only u and the parameters; backward recomputes each row block (the rows are
    independent sequences) and backpropagates it before the next, so what the scan form costs
    beyond its input and output is one block's chunk states and the batch-independent tables."""

    @staticmethod
    def forward(ctx, uc, dtA, Ct, D, impl):
        B, H, nc, T = uc.shape
        rows = _row_block(B, H, dtA.shape[1], nc, T)
        with torch.no_grad():
            tables = scan_tables(dtA, Ct, T, nc > 1)
            y = torch.cat([scan_apply(uc[r : r + rows], D, tables, impl) for r in range(0, B, rows)])
        ctx.save_for_backward(uc, dtA, Ct, D)
        ctx.impl = impl
        return y

    @staticmethod
    def backward(ctx, dy):
        uc, dtA, Ct, D = ctx.saved_tensors
        B, H, nc, T = uc.shape
        rows = _row_block(B, H, dtA.shape[1], nc, T)
        with torch.enable_grad():
            dtA_, Ct_, D_ = (t.detach().requires_grad_() for t in (dtA, Ct, D))
            tables = scan_tables(dtA_, Ct_, T, nc > 1)  # graph kept until the tables' gradients are in
            live = [t for t in tables if t is not None] + [D_]
            leaves = [t.detach().requires_grad_() for t in live]  # the row blocks' graphs stop here
            leaf_tables = leaves[:-1] + [None] * (len(tables) - len(live) + 1)
            grads = [torch.zeros_like(t) for t in leaves]
            du = torch.empty_like(uc)
            for r in range(0, B, rows):  # one row block's graph at a time
                ub = uc[r : r + rows].detach().requires_grad_()
                yb = scan_apply(ub, leaves[-1], leaf_tables, ctx.impl)
                g = torch.autograd.grad(yb, [ub] + leaves, dy[r : r + rows])
                du[r : r + rows] = g[0]
                for acc, gi in zip(grads, g[1:]):
                    acc += gi
            torch.autograd.backward(live, grads)
        return du, dtA_.grad, Ct_.grad, D_.grad, None


def s4d_scan(
    u: torch.Tensor, dtA: torch.Tensor, Ct: torch.Tensor, D: torch.Tensor, chunk: int = 0, impl: str | None = None
) -> torch.Tensor:
    """Chunked scan form (module doc); same signature and result as `s4d_conv` plus `chunk`
    (0 = `auto_chunk`) and `impl` (the diag_scan implementation; None = dispatch).
    Differentiable once (no double backward)."""
    B, H, L = u.shape
    T = min(chunk or auto_chunk(L), L)
    nc = -(-L // T)
    uc = nn.functional.pad(u, (0, nc * T - L)).view(B, H, nc, T)  # padding after the end: causal, harmless
    y = _S4DScan.apply(uc, dtA, Ct, D, impl)  # [B, H, nc, T]
    return y.reshape(B, H, nc * T)[:, :, :L]
