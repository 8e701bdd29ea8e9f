"""RaMViD (Hoeppe et al. 2022, seed 001) denoiser: a 3D-conv UNet with joint space-time attention.

Improved-DDPM blocks with every conv 3x3x3 over [B, C, F, H, W] (GroupNorm statistics span the
clip's frames, as published). Down-sampling is spatial only unless `scale_time_dim` halves time at
every level too; attention at the `attention_resolutions` (16 and 8) and in the middle is joint over
all F*H*W positions of the clip.

How the denoiser contract (docs/denoiser.md) maps onto it:
- noise_levels: RaMViD has one timestep per clip: the time embedding takes the largest level over
  the clip's real frames, i.e. the latent frames' level (observed frames are 0 and given clean).
- observed: an extra input plane, 1 on conditioning frames (RaMViD's masked frames). With
  `observed_plane=False` there is none: conditioning frames are told apart only by being clean,
  as in the published network (checkpoints converted from RaMViD's own trainer).
- frame_indices: RaMViD has no frame-index conditioning; its convs see slot neighbours. The model
  puts frames in ascending frame-index order (and back afterwards), then requires the real frames
  to be consecutive (i, i+1, ...): jobs with gaps are refused with FdmError, so use it with
  schemes whose jobs are contiguous (autoregressive), as RaMViD itself is used.
- valid: convs and GroupNorm mix frames, so masking attention would not isolate padding. Instead
  each clip runs on its real frames only (clips are grouped by their real-frame count); padding
  slots get zeros and cannot influence real frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError
from fdm_engine.models import MODELS
from fdm_engine.models.attention import SpatialAttention
from fdm_engine.models.blocks import (
    Downsample,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    conv_nd,
    group_norm,
    zero_module,
)
from fdm_engine.models.contract import check_contract_inputs, on_real_frames
from fdm_engine.models.vdm_unet import (
    build_levels,
    check_unet_shape,
    resolve_channel_mult,
)

# RaMViD's channel multipliers by image size (its script_util; 128 differs from FDM's).
RAMVID_CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}


@dataclass(frozen=True)
class RaMViDUNetConfig(Config):
    """Constructor arguments of RaMViDUNet (names follow RaMViD's flags where they exist).

    `scale_time_dim`: RaMViD's `--scale_time_dim 0` is False (space-only down-sampling, every
    published config); True halves time at every down-sampling level as well, so F must then be
    divisible by 2^(len(channel_mult) - 1). `num_frames` is RaMViD's `--seq_len` (training clip
    length, the default K); the network accepts any F.
    `observed_plane`: an extra input plane marks the observed frames (ours); False leaves it out,
    as the published RaMViD network has it. `time_scale` multiplies timesteps before the
    embedding (improved-diffusion's `rescale_timesteps`: 1000 / diffusion_steps; 1 = as given).
    """

    image_size: int = 64
    channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = ()
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    dropout: float = 0.0
    scale_time_dim: bool = False
    num_frames: int = 16
    observed_plane: bool = True
    time_scale: float = 1.0

    def __post_init__(self):
        check_unet_shape(self, "RaMViDUNetConfig", attention_levels=set(self.attention_resolutions))
        if not isinstance(self.observed_plane, bool):
            raise FdmError(f"RaMViDUNetConfig.observed_plane must be true or false (got {self.observed_plane!r})")
        if not self.time_scale > 0:
            raise FdmError(f"RaMViDUNetConfig.time_scale must be > 0 (got {self.time_scale})")
        if not isinstance(self.scale_time_dim, bool):
            raise FdmError(f"RaMViDUNetConfig.scale_time_dim must be true or false (got {self.scale_time_dim!r})")
        if self.num_frames < 1:
            raise FdmError(f"RaMViDUNetConfig.num_frames must be >= 1 (got {self.num_frames})")

    @property
    def mults(self) -> tuple[int, ...]:
        return resolve_channel_mult(self.channel_mult, self.image_size, RAMVID_CHANNEL_MULT)

    @property
    def time_factor(self) -> int:
        """How many times fewer frames the deepest level has (F must be a multiple)."""
        return 2 ** (len(self.mults) - 1) if self.scale_time_dim else 1


def _ramvid_paper(num_res_blocks: int, seq_len: int) -> RaMViDUNetConfig:
    # Seed 001: --image_size 64 --num_channels 128 --scale_time_dim 0, attention 16,8, 4 heads.
    return RaMViDUNetConfig(
        image_size=64, channels=3, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=num_res_blocks,
        attention_resolutions=(16, 8), num_heads=4, scale_time_dim=False, num_frames=seq_len,
    )


RAMVID_PRESETS: dict[str, RaMViDUNetConfig] = {
    "tiny": RaMViDUNetConfig(
        image_size=32, channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=4, num_frames=10,
    ),
    "ramvid-bair-64": _ramvid_paper(num_res_blocks=2, seq_len=20),
    "ramvid-kinetics600-64": _ramvid_paper(num_res_blocks=3, seq_len=16),
    "ramvid-ucf101-64": _ramvid_paper(num_res_blocks=3, seq_len=16),
}


class JointAttention(SpatialAttention):
    """FDM's spatial attention over all F*H*W positions of a clip: x [B, C, F, H, W] -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(2, 3)).reshape(x.shape)  # tokens: (f h) w = F*H*W


class RaMViDUNet(nn.Module):
    """RaMViD denoiser: pred [B, F, C, H, W] = model(x, frame_indices, noise_levels, observed, valid)."""

    Config = RaMViDUNetConfig
    PRESETS = RAMVID_PRESETS

    def __init__(self, config: RaMViDUNetConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.channels = config.channels
        self.max_frames = None  # any F (a multiple of config.time_factor)
        emb_dim, heads, attn_res = 4 * config.base_channels, config.num_heads, set(config.attention_resolutions)
        t = 2 if config.scale_time_dim else 1

        self.time_embed = TimestepEmbedding(config.base_channels, emb_dim)
        in_planes = config.channels + int(config.observed_plane)
        self.in_conv = conv_nd(3, in_planes, config.base_channels, 3, padding=1)
        self.down, self.middle, self.up, ch = build_levels(
            config,
            res_block=lambda cin, cout: ResBlock(cin, cout, emb_dim, config.dropout, dims=3),
            mixers=lambda c, res: [JointAttention(c, heads)] if res is None or res in attn_res else [],
            down=lambda c: Downsample(c, dims=3, stride=(t, 2, 2)),
            up=lambda c: Upsample(c, dims=3, scale=(t, 2, 2)),
        )
        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(conv_nd(3, ch, config.channels, 3, padding=1))

    def forward(
        self,
        x: torch.Tensor,
        frame_indices: torch.Tensor,
        noise_levels: torch.Tensor,
        observed: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, F, C, H, W]; frame_indices [B, F] int64; noise_levels [B, F] float timesteps;
        observed [B, F] bool; valid [B, F] bool or None -> pred [B, F, C, H, W] (0 on padding)."""
        check_contract_inputs(self, x, frame_indices, noise_levels, observed, valid)
        return on_real_frames(self.clip_forward, x, frame_indices, noise_levels, observed, valid)

    def check_frames(self, frames) -> None:
        """FdmError unless the model can take a clip of these frame indices (ascending): consecutive,
        as many as scale_time_dim divides. `fdm sample` checks a static scheme's jobs with it up front."""
        frames = list(frames)
        if any(b - a != 1 for a, b in zip(frames, frames[1:])):
            raise FdmError(
                f"RaMViD needs consecutive frame indices (it sees slot positions only; got {frames}); "
                f"use a scheme whose jobs are contiguous, e.g. autoreg"
            )
        if len(frames) % self.config.time_factor:
            raise FdmError(
                f"RaMViD with scale_time_dim needs a frame count divisible by {self.config.time_factor} "
                f"(got {len(frames)} real frames)"
            )

    def clip_forward(self, x, frame_indices, noise_levels, observed) -> torch.Tensor:
        """The network on whole clips of consecutive frames, slots in frame order.
        x [b, n, C, H, W]; frame_indices, noise_levels, observed [b, n] -> [b, n, C, H, W]."""
        b, n, _, H, W = x.shape
        if n > 1 and not bool((frame_indices[:, 1:] - frame_indices[:, :-1] == 1).all()):
            bad = frame_indices[(frame_indices[:, 1:] - frame_indices[:, :-1] != 1).any(dim=1)][0].tolist()
            self.check_frames(bad)
        self.check_frames(range(n))
        t = noise_levels.amax(dim=1)  # [b] one timestep per clip: the latent level
        emb = self.time_embed(t * self.config.time_scale if self.config.time_scale != 1 else t)  # [b, E]
        if self.config.observed_plane:
            indicator = observed.to(x.dtype)[:, :, None, None, None].expand(b, n, 1, H, W)  # [b, n, 1, H, W]
            x = torch.cat([x, indicator], dim=2)  # [b, n, C+1, H, W]
        h = rearrange(x, "b f c h w -> b c f h w")  # [b, C(+1), n, H, W]

        h = self.in_conv(h)  # [b, base, n, H, W]
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out_conv(F.silu(self.out_norm(h)))  # [b, C, n, H, W]
        return rearrange(h, "b c f h w -> b f c h w")


MODELS.register("ramvid", RaMViDUNet)
