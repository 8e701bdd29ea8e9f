"""The SSM temporal layers: S4D, and the bidirectional S4D of "SSM meets video diffusion" (`bi-s4d`;
docs/architectures.md, "SSM"). The convolution itself, in its conv and scan forms, is the op
kernels.s4d; these modules own its parameters.

Tokens are the F frames at one spatial position. With u [N, C, F] (N = batch x positions):

    y_fwd = S4D_f(u)                       causal in time
    y_bwd = flip(S4D_b(flip(u)))            anti-causal: S4D on the time-reversed sequence
    mix="sum":  z = y_fwd + y_bwd                                   (the published "v16")
    mix="glu":  z = GLU(W_f GELU(y_fwd)) + GLU(W_b GELU(y_bwd))     (the published "v8": S4D's
                                                                    output GLU per direction)
    out  = W_2 GELU(W_1 GELU(z))           the MLP, hidden `mlp_hidden` (512 in the paper)

Two options reproduce the SSM authors' published layer exactly (its `S4DLayer`, versions 16 and 8):
`input_mlp` puts a second MLP (hidden `mlp_hidden`) on u before both scans (their v16), and
`gelu_first=False` drops the GELU on z before W_1 (their v16 and v8 feed z to W_1 directly).

Every step is pointwise in time except the two S4D convolutions, so time and memory are linear in
F (the S4D `scan` mode never builds the H x N/2 x F Vandermonde kernel). The layer is the
temporal mixer only: a UNet wraps it as x + layer(norm(x)) like its attention layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from kernels.s4d import discretize, s4d_conv, s4d_scan

MODES = ("scan", "conv")
MIXES = ("sum", "glu")
# The seed's `--s4d_version 16 | 8` (and the names this layer had before): accepted, stored as MIXES.
SEED_MIX_NAMES = {"v16": "sum", "16": "sum", "v8": "glu", "8": "glu"}


def mix_name(value) -> str:
    """"sum" or "glu" for `value`, one of MIXES or the seed's version names (16, "v16", 8, "v8")."""
    name = SEED_MIX_NAMES.get(str(value), value)
    if name not in MIXES:
        raise FdmError(f"bi-s4d mix must be one of {', '.join(MIXES)} (or the seed's v16 / v8) (got {value!r})")
    return name


@dataclass(frozen=True)
class S4DConfig(Config):
    """Constructor arguments of S4D. `chunk=0` picks the scan chunk length automatically."""

    channels: int
    state_size: int = 512  # N: N/2 complex modes per channel (the SSM paper's "SSM hidden dims")
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "scan"  # "scan" (chunked recurrence through kernels.diag_scan) or "conv" (FFT)
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


class S4D(nn.Module):
    """S4D core: y [B, H, L] = causal SSM convolution of u [B, H, L] + D u (no activation/mixing).

    S4D-Lin initialisation (kernels.s4d): A_n = -1/2 + i pi n, log dt uniform in [log dt_min, log dt_max].
    """

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
        """(dtA, C~) [H, N2] complex for the current parameters (see `kernels.s4d.discretize`)."""
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


@dataclass(frozen=True)
class BiS4DConfig(Config):
    """Constructor arguments of BiS4D (defaults: the SSM paper's table, docs/architectures.md)."""

    RENAMED = {"version": "mix"}

    channels: int
    state_size: int = 512  # N; N/2 = 256 complex modes per channel
    mlp_hidden: int = 512
    mix: str = "sum"  # how the two directions combine: "sum", or "glu" (each GLU-gated, then summed)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "scan"  # "scan" (chunked recurrence through kernels.diag_scan) or "conv" (FFT)
    chunk: int = 0  # scan chunk length; 0 = automatic
    input_mlp: bool = False  # an MLP (hidden mlp_hidden) on the input before both scans
    gelu_first: bool = True  # GELU on the combined scans before the output MLP

    def __post_init__(self):
        object.__setattr__(self, "mix", mix_name(self.mix))  # the seed's "v16" / "v8" stored as sum / glu
        if self.mlp_hidden < 1:
            raise FdmError(f"BiS4DConfig.mlp_hidden must be >= 1 (got {self.mlp_hidden})")
        self.s4d_config()  # validates the S4D fields

    def s4d_config(self) -> S4DConfig:
        return S4DConfig(self.channels, self.state_size, self.dt_min, self.dt_max, self.mode, self.chunk)


class BiS4D(nn.Module):
    """Bidirectional S4D + MLP over frames (module doc). See `forward` for the accepted layouts."""

    Config = BiS4DConfig

    def __init__(self, config: BiS4DConfig):
        super().__init__()
        self.config = config
        C = config.channels
        self.fwd = S4D(config.s4d_config())
        self.bwd = S4D(config.s4d_config())
        if config.mix == "glu":
            self.gate_fwd = nn.Linear(C, 2 * C)
            self.gate_bwd = nn.Linear(C, 2 * C)
        if config.input_mlp:
            self.fc_in1 = nn.Linear(C, config.mlp_hidden)
            self.fc_in2 = nn.Linear(config.mlp_hidden, C)
        self.fc1 = nn.Linear(C, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, C)

    def mix(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """x [N, F, C] (N independent sequences of F frames) -> [N, F, C]."""
        if self.config.input_mlp:
            x = self.fc_in2(F.gelu(self.fc_in1(x)))  # [N, F, C]
        u = x.transpose(1, 2)  # [N, C, F]
        y_f = self.fwd(u, mode).transpose(1, 2)  # [N, F, C]
        y_b = self.bwd(u.flip(-1), mode).flip(-1).transpose(1, 2)  # [N, F, C]
        if self.config.mix == "glu":
            z = F.glu(self.gate_fwd(F.gelu(y_f)), dim=-1) + F.glu(self.gate_bwd(F.gelu(y_b)), dim=-1)
        else:
            z = y_f + y_b
        if self.config.gelu_first:
            z = F.gelu(z)
        return self.fc2(F.gelu(self.fc1(z)))  # [N, F, C]

    def forward(self, x: torch.Tensor, frames: int | None = None, mode: str | None = None) -> torch.Tensor:
        """Temporal mixing at every spatial position; the output has the input's layout.

        x [N, F, C]            tokens: N sequences (e.g. N = B*H*W) of F frames
        x [B, F, C, H, W]      video: mixes the F frames at each of the H*W positions
        x [B*F, C, H, W]       frames folded into the batch (UNet layout); pass `frames`=F
        `mode` overrides the config's S4D mode ("scan" or "conv").
        """
        C = self.config.channels
        if x.ndim == 3 and x.shape[-1] == C:
            return self.mix(x, mode)
        if x.ndim == 5 and x.shape[2] == C:
            B, Fr, _, H, W = x.shape
            out = self.mix(rearrange(x, "b f c h w -> (b h w) f c"), mode)
            return rearrange(out, "(b h w) f c -> b f c h w", b=B, h=H, w=W)
        if x.ndim == 4 and x.shape[1] == C and frames and x.shape[0] % frames == 0:
            H, W = x.shape[-2:]
            out = self.mix(rearrange(x, "(b f) c h w -> (b h w) f c", f=frames), mode)
            return rearrange(out, "(b h w) f c -> (b f) c h w", h=H, w=W)
        raise FdmError(
            f"BiS4D expects [N, F, {C}], [B, F, {C}, H, W] or [B*F, {C}, H, W] with frames=F "
            f"(got {tuple(x.shape)}, frames={frames})"
        )
