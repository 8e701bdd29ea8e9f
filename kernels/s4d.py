"""S4D: a diagonal state-space layer (Gu et al. 2022, "On the parameterization and initialization
of diagonal state space models"), as used per channel by the bidirectional SSM temporal layer.

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
  Nothing of size H x N/2 x L is built: the powers a^l are needed only for l <= T, the states only
  at chunk boundaries (B x H x N/2 x L/T). Memory and time are linear in L. With L <= T there is a
  single chunk and no scan at all.

Layout: u, y are [B, H, L] (channels first, the FFT axis last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from kernels.diag_scan import diag_scan

MODES = ("scan", "conv")


@dataclass(frozen=True)
class S4DConfig(Config):
    """Constructor arguments of S4D. `chunk=0` picks the scan chunk length automatically."""

    channels: int
    state_size: int = 512  # N: N/2 complex modes per channel (the SSM paper's "SSM hidden dims")
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "scan"
    chunk: int = 0

    def __post_init__(self):
        if self.channels < 1:
            raise FdmError(f"S4DConfig.channels must be >= 1 (got {self.channels})")
        if self.state_size < 2 or self.state_size % 2:
            raise FdmError(f"S4DConfig.state_size must be even and >= 2 (got {self.state_size})")
        if not 0 < self.dt_min <= self.dt_max:
            raise FdmError(f"S4DConfig needs 0 < dt_min <= dt_max (got {self.dt_min}, {self.dt_max})")
        if self.mode not in MODES:
            raise FdmError(f"S4DConfig.mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.chunk < 0:
            raise FdmError(f"S4DConfig.chunk must be >= 0 (got {self.chunk})")


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


def auto_chunk(n_modes: int, L: int) -> int:
    """Default chunk length: the chunk-state tensor (N2 per chunk) then costs no more than the input
    (1 per step) while the powers a^l stay short; at least 64 steps so the FFTs are not tiny."""
    return max(64, n_modes) if L > max(64, n_modes) else L


def s4d_scan(
    u: torch.Tensor, dtA: torch.Tensor, Ct: torch.Tensor, D: torch.Tensor, chunk: int = 0, impl: str | None = None
) -> torch.Tensor:
    """Chunked scan form (module doc); same signature and result as `s4d_conv` plus `chunk`
    (0 = `auto_chunk`) and `impl` (the diag_scan implementation; None = dispatch)."""
    B, H, L = u.shape
    N2 = dtA.shape[-1]
    T = min(chunk or auto_chunk(N2, L), L)
    nc = -(-L // T)
    Lp = nc * T
    uc = nn.functional.pad(u, (0, Lp - L)).view(B, H, nc, T)  # padding after the end: causal, harmless

    steps = torch.arange(T + 1, device=u.device, dtype=u.dtype)
    powers = torch.exp(dtA[:, :, None] * steps)  # [H, N2, T+1]  a^0 .. a^T
    K = 2 * torch.einsum("hn,hnl->hl", Ct, powers[:, :, :T]).real  # [H, T]  kernel inside a chunk
    y = causal_fft_conv(uc, K[:, None, :])  # [B, H, nc, T]; the kernel's FFT broadcasts over chunks
    y = y + D[:, None, None] * uc  # [B, H, nc, T]
    if nc > 1:
        # Chunk-end states S_c,n = sum_s a_n^(T-1-s) u_c,s : real matmul against [re | im] columns.
        W = torch.view_as_real(powers[:, :, :T].flip(-1).transpose(1, 2).contiguous())  # [H, T, N2, 2]
        S = torch.einsum("bhct,htk->bhck", uc, W.reshape(H, T, 2 * N2))  # [B, H, nc, 2*N2]
        S = torch.view_as_complex(S.view(B, H, nc, N2, 2))  # [B, H, nc, N2]
        S = S.permute(0, 1, 3, 2).reshape(B, H * N2, nc)  # [B, H*N2, nc]
        aT = powers[:, :, T].reshape(1, H * N2, 1)  # a^T, time-invariant: broadcast, not copied
        Hs = diag_scan(aT, S, impl=impl)  # [B, H*N2, nc] state after each chunk
        Hin = Hs[:, :, :-1].reshape(B, H, N2, nc - 1).permute(0, 1, 3, 2)  # [B, H, nc-1, N2] entering chunks 1..
        # y_c,t += 2 Re sum_n C~_n a_n^(t+1) Hin_n  =  [Re Hin | Im Hin] @ [2 Re V ; -2 Im V]
        V = Ct[:, :, None] * powers[:, :, 1:]  # [H, N2, T]
        Vri = torch.cat([2 * V.real, -2 * V.imag], dim=1)  # [H, 2*N2, T]
        Hri = torch.cat([Hin.real, Hin.imag], dim=-1)  # [B, H, nc-1, 2*N2]
        carried = torch.einsum("bhck,hkt->bhct", Hri, Vri)  # [B, H, nc-1, T]
        y = torch.cat([y[:, :, :1], y[:, :, 1:] + carried], dim=2)
    return y.reshape(B, H, Lp)[:, :, :L]


class S4D(nn.Module):
    """S4D core: y [B, H, L] = causal SSM convolution of u [B, H, L] + D u (no activation/mixing)."""

    Config = S4DConfig

    def __init__(self, config: S4DConfig):
        super().__init__()
        self.config = config
        H, N2 = config.channels, config.state_size // 2
        log_dt = torch.rand(H) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        self.log_dt = nn.Parameter(log_dt)  # [H]
        self.log_A_real = nn.Parameter(torch.full((H, N2), math.log(0.5)))  # Re A = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(N2, dtype=torch.float32).repeat(H, 1))  # Im A = pi n
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N2, dtype=torch.complex64)))  # [H, N2, 2]
        self.D = nn.Parameter(torch.randn(H))

    def discrete(self):
        """(dtA, C~) [H, N2] complex for the current parameters (see `discretize`)."""
        return discretize(self.log_dt, self.log_A_real, self.A_imag, torch.view_as_complex(self.C))

    def forward(self, u: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """u [B, H, L] -> y [B, H, L]; `mode` overrides the config's ("scan" or "conv")."""
        mode = mode or self.config.mode
        if u.ndim != 3 or u.shape[1] != self.config.channels:
            raise FdmError(f"S4D expects u [B, {self.config.channels}, L] (got {tuple(u.shape)})")
        dtA, Ct = self.discrete()
        u_c = u.to(torch.promote_types(u.dtype, torch.float32))  # FFTs and complex powers: fp32 at least
        if mode == "conv":
            y = s4d_conv(u_c, dtA, Ct, self.D)
        elif mode == "scan":
            y = s4d_scan(u_c, dtA, Ct, self.D, self.config.chunk)
        else:
            raise FdmError(f"S4D mode must be one of {', '.join(MODES)} (got {mode!r})")
        return y.to(u.dtype)
