"""Bidirectional S4D temporal layer (SPEC §3 "SSM"; the SSM-meets-video-diffusion `bi-s4d` layer).

Tokens are the F frames at one spatial position. With u [N, C, F] (N = batch x positions):

    y_fwd = S4D_f(u)                       causal in time
    y_bwd = flip(S4D_b(flip(u)))            anti-causal: S4D on the time-reversed sequence
    v16:  z = y_fwd + y_bwd
    v8:   z = GLU(W_f GELU(y_fwd)) + GLU(W_b GELU(y_bwd))     (S4D's output GLU per direction)
    out  = W_2 GELU(W_1 GELU(z))           the MLP, hidden `mlp_hidden` (512 in the paper)

Every step is pointwise in time except the two S4D convolutions, so time and memory are linear in
F (the S4D `scan` mode never builds the H x N/2 x F Vandermonde kernel). The layer is the
temporal mixer only: a UNet wraps it as x + layer(norm(x)) like its attention layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from kernels.s4d import MODES, S4D, S4DConfig

VERSIONS = ("v16", "v8")


@dataclass(frozen=True)
class BiS4DConfig(Config):
    """Constructor arguments of BiS4D (defaults: the SSM paper's table, SPEC §3)."""

    channels: int
    state_size: int = 512  # N; N/2 = 256 complex modes per channel
    mlp_hidden: int = 512
    version: str = "v16"  # "v16": directions summed; "v8": each direction GLU-gated, then summed
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "scan"  # "scan" (chunked recurrence through kernels.diag_scan) or "conv" (FFT)
    chunk: int = 0  # scan chunk length; 0 = automatic

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise FdmError(f"BiS4DConfig.version must be one of {', '.join(VERSIONS)} (got {self.version!r})")
        if self.mlp_hidden < 1:
            raise FdmError(f"BiS4DConfig.mlp_hidden must be >= 1 (got {self.mlp_hidden})")
        if self.mode not in MODES:
            raise FdmError(f"BiS4DConfig.mode must be one of {', '.join(MODES)} (got {self.mode!r})")
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
        if config.version == "v8":
            self.gate_fwd = nn.Linear(C, 2 * C)
            self.gate_bwd = nn.Linear(C, 2 * C)
        self.fc1 = nn.Linear(C, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, C)

    def mix(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """x [N, F, C] (N independent sequences of F frames) -> [N, F, C]."""
        u = x.transpose(1, 2)  # [N, C, F]
        y_f = self.fwd(u, mode).transpose(1, 2)  # [N, F, C]
        y_b = self.bwd(u.flip(-1), mode).flip(-1).transpose(1, 2)  # [N, F, C]
        if self.config.version == "v8":
            z = F.glu(self.gate_fwd(F.gelu(y_f)), dim=-1) + F.glu(self.gate_bwd(F.gelu(y_b)), dim=-1)
        else:
            z = y_f + y_b
        return self.fc2(F.gelu(self.fc1(F.gelu(z))))  # [N, F, C]

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
