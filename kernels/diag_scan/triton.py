"""diag_scan as a chunked Triton scan; forward and backward kernels behind a torch.autograd.Function.

Imported only when the ``triton`` implementation is asked for (`kernels.diag_scan` imports it
lazily), so machines without a working triton never load it.

Layout. Complex [B, D, L] tensors are read through `torch.view_as_real` as float [B, D, L, 2]:
the kernel loads real and imaginary parts separately and does complex arithmetic on pairs of
float registers (Triton has no complex type). Strides are passed explicitly, so `a` may be a
broadcast view (stride 0 over batch or time, as S4D's time-invariant a_n is) and costs no copy.

Grid: one program per (batch, block of BLOCK_D channels). Each walks the sequence in tiles of
BLOCK_L steps: the tile is scanned in registers with `tl.associative_scan` over the pair
(A, X) under the composition (a1, x1) then (a2, x2) = (a2 a1, a2 x1 + x2), so A_t is the
in-tile product and X_t the in-tile state; then h_t = X_t + A_t * carry, and the carry is
the tile's last h. Reverse scans load the tile at mirrored addresses (t -> L-1-t), so the
same code runs both directions with no flip copies.

Backward (see `kernels.diag_scan.cpu.scan_backward` for the derivation): g = dx is the scan in
the opposite direction of dh with coefficients conj(a) shifted one step, and da = g conj(h_prev);
one kernel computes both, reading a and h at shifted addresses.

Compute is in float32 (float64 for complex128); complex32 storage is read and written as half.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.diag_scan.args import check_scan_args
from kernels.tensors import resolved

DEFAULT_BLOCK_D = 16
DEFAULT_BLOCK_L = 64


@triton.jit
def _compose(ar1, ai1, xr1, xi1, ar2, ai2, xr2, xi2):
    # Step 1 then step 2 of h -> a h + x, complex numbers as (real, imag) pairs.
    ar = ar2 * ar1 - ai2 * ai1
    ai = ar2 * ai1 + ai2 * ar1
    xr = ar2 * xr1 - ai2 * xi1 + xr2
    xi = ar2 * xi1 + ai2 * xr1 + xi2
    return ar, ai, xr, xi


@triton.jit
def _scan_fwd_kernel(
    A, X, H,
    D, L,
    sab, sad, sal,  # strides of a in floats (view_as_real); 0 where a is broadcast
    sxb, sxd, sxl,  # strides of x and h (same layout)
    REVERSE: tl.constexpr, F64: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cols = tl.arange(0, BLOCK_L)
    d_ok = offs_d < D
    acc_t = tl.float64 if F64 else tl.float32
    carry_r = tl.zeros([BLOCK_D], dtype=acc_t)
    carry_i = tl.zeros([BLOCK_D], dtype=acc_t)
    a_row = A + pid_b * sab + offs_d[:, None] * sad
    x_row = X + pid_b * sxb + offs_d[:, None] * sxd
    h_row = H + pid_b * sxb + offs_d[:, None] * sxd
    for start in range(0, L, BLOCK_L):
        step = start + cols  # position in scan order
        t = (L - 1 - step) if REVERSE else step  # position in memory
        m = d_ok[:, None] & (step < L)[None, :]
        pa = a_row + t[None, :] * sal
        px = x_row + t[None, :] * sxl
        ar = tl.load(pa, mask=m, other=0.0).to(acc_t)
        ai = tl.load(pa + 1, mask=m, other=0.0).to(acc_t)
        xr = tl.load(px, mask=m, other=0.0).to(acc_t)
        xi = tl.load(px + 1, mask=m, other=0.0).to(acc_t)
        ar, ai, xr, xi = tl.associative_scan((ar, ai, xr, xi), 1, _compose)
        hr = xr + ar * carry_r[:, None] - ai * carry_i[:, None]
        hi = xi + ar * carry_i[:, None] + ai * carry_r[:, None]
        ph = h_row + t[None, :] * sxl
        tl.store(ph, hr.to(H.dtype.element_ty), mask=m)
        tl.store(ph + 1, hi.to(H.dtype.element_ty), mask=m)
        last = (cols == BLOCK_L - 1)[None, :]  # padded steps (a = x = 0) carry nothing, but the
        carry_r = tl.sum(tl.where(last, hr, 0.0), axis=1)  # last real step is never a padded one
        carry_i = tl.sum(tl.where(last, hi, 0.0), axis=1)  # except in the final tile, which is unused


@triton.jit
def _scan_bwd_kernel(
    A, Hs, DH, DA, DX,
    D, L,
    sab, sad, sal,
    sxb, sxd, sxl,  # strides of h, dh, da, dx (same layout)
    REVERSE: tl.constexpr, F64: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # g_t = dh_t + conj(a_next(t)) g_next(t) scanned against the forward direction, where next(t)
    # is t+1 for a forward scan and t-1 for a reverse one; da_t = g_t conj(h_prev(t)).
    pid_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cols = tl.arange(0, BLOCK_L)
    d_ok = offs_d < D
    acc_t = tl.float64 if F64 else tl.float32
    carry_r = tl.zeros([BLOCK_D], dtype=acc_t)
    carry_i = tl.zeros([BLOCK_D], dtype=acc_t)
    a_row = A + pid_b * sab + offs_d[:, None] * sad
    off_row = pid_b * sxb + offs_d[:, None] * sxd
    for start in range(0, L, BLOCK_L):
        step = start + cols
        t = step if REVERSE else (L - 1 - step)
        t_next = t - 1 if REVERSE else t + 1  # the step after t in the forward direction
        t_prev = t + 1 if REVERSE else t - 1
        m = d_ok[:, None] & (step < L)[None, :]
        m_next = m & ((t_next >= 0) & (t_next < L))[None, :]
        m_prev = m & ((t_prev >= 0) & (t_prev < L))[None, :]
        pa = a_row + t_next[None, :] * sal
        cr = tl.load(pa, mask=m_next, other=0.0).to(acc_t)
        ci = -tl.load(pa + 1, mask=m_next, other=0.0).to(acc_t)  # conj
        pd = DH + off_row + t[None, :] * sxl
        gr = tl.load(pd, mask=m, other=0.0).to(acc_t)
        gi = tl.load(pd + 1, mask=m, other=0.0).to(acc_t)
        cr, ci, gr, gi = tl.associative_scan((cr, ci, gr, gi), 1, _compose)
        gr2 = gr + cr * carry_r[:, None] - ci * carry_i[:, None]
        gi2 = gi + cr * carry_i[:, None] + ci * carry_r[:, None]
        ph = Hs + off_row + t_prev[None, :] * sxl
        hr = tl.load(ph, mask=m_prev, other=0.0).to(acc_t)
        hi = tl.load(ph + 1, mask=m_prev, other=0.0).to(acc_t)
        po = off_row + t[None, :] * sxl
        tl.store(DX + po, gr2.to(DX.dtype.element_ty), mask=m)
        tl.store(DX + po + 1, gi2.to(DX.dtype.element_ty), mask=m)
        tl.store(DA + po, (gr2 * hr + gi2 * hi).to(DA.dtype.element_ty), mask=m)  # g * conj(h)
        tl.store(DA + po + 1, (gi2 * hr - gr2 * hi).to(DA.dtype.element_ty), mask=m)
        last = (cols == BLOCK_L - 1)[None, :]
        carry_r = tl.sum(tl.where(last, gr2, 0.0), axis=1)
        carry_i = tl.sum(tl.where(last, gi2, 0.0), axis=1)


def _floats(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z)  # [B, D, L, 2]; strides in floats, the pair adjacent


def _grid(B: int, D: int, block_d: int):
    return (B, triton.cdiv(D, block_d))


def scan_forward(a, x, reverse: bool, block_d: int = DEFAULT_BLOCK_D, block_l: int = DEFAULT_BLOCK_L):
    """Launch the forward kernel: a (broadcast view allowed), x complex [B, D, L] -> h like x."""
    B, D, L = x.shape
    x = x.contiguous()
    h = torch.empty_like(x)
    ar, xr, hr = _floats(a), _floats(x), _floats(h)
    _scan_fwd_kernel[_grid(B, D, block_d)](
        ar, xr, hr, D, L, *ar.stride()[:3], *xr.stride()[:3],
        REVERSE=reverse, F64=x.dtype == torch.complex128, BLOCK_D=block_d, BLOCK_L=block_l,
    )
    return h


def scan_backward(a, h, dh, reverse: bool, block_d: int = DEFAULT_BLOCK_D, block_l: int = DEFAULT_BLOCK_L):
    """Launch the backward kernel: (da, dx), both shaped and laid out like h."""
    B, D, L = h.shape
    dh = dh.contiguous()
    da, dx = torch.empty_like(h), torch.empty_like(h)
    ar = _floats(a)
    _scan_bwd_kernel[_grid(B, D, block_d)](
        ar, _floats(h), _floats(dh), _floats(da), _floats(dx), D, L,
        *ar.stride()[:3], *_floats(h).stride()[:3],
        REVERSE=reverse, F64=h.dtype == torch.complex128, BLOCK_D=block_d, BLOCK_L=block_l,
    )
    return da, dx


class _DiagScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x, reverse, block_d, block_l):
        h = scan_forward(a, x, reverse, block_d, block_l)
        ctx.save_for_backward(a, h)
        ctx.cfg = (reverse, block_d, block_l)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h = ctx.saved_tensors
        reverse, block_d, block_l = ctx.cfg
        da, dx = scan_backward(a, h, resolved(dh).to(h.dtype), reverse, block_d, block_l)
        return da.to(a.dtype), dx, None, None, None


def diag_scan_triton(
    a: torch.Tensor,
    x: torch.Tensor,
    reverse: bool = False,
    block_d: int = DEFAULT_BLOCK_D,
    block_l: int = DEFAULT_BLOCK_L,
) -> torch.Tensor:
    """Chunked Triton diag_scan (see module doc). a, x complex [B, D, L] -> h [B, D, L].

    complex32, complex64 and complex128 inputs are kept in their storage precision (complex32 is
    computed in float32). `block_d` and `block_l` (powers of two) set the tile.
    """
    args = check_scan_args(a, x)
    dtype = args.out_dtype
    a, x = args.a.to(dtype), args.x.to(dtype)
    if x.shape[-1] == 0:
        return x.clone()
    return _DiagScanTriton.apply(a, x, reverse, block_d, block_l)
