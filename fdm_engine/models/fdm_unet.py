"""The FDM denoiser (docs/architectures.md): a per-frame 2D UNet with temporal + spatial attention blocks.

Frames are folded into the batch axis for convolutions and spatial attention; temporal attention
mixes frames at each spatial position, and frame order reaches the network only through relative
encodings of absolute frame indices (fdm_engine.models.attention). An extra input plane marks
observed frames. Per-frame noise levels give per-frame time embeddings.
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
from fdm_engine.models.attention import AttentionBlock, FrameContext, padding_mask, relative_features
from fdm_engine.models.attention_published import PublishedAttentionBlock
from fdm_engine.models.contract import check_contract_inputs
from fdm_engine.models.blocks import Downsample, ResBlock, TimestepEmbedding, Upsample, group_norm, zero_module

# Channel multipliers used when `channel_mult` is left empty (improved DDPM / FDM).
DEFAULT_CHANNEL_MULT = {32: (1, 2, 2, 2), 64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4)}

# `attention`: ours, or the published FDM code's form (models/attention_published.py), which
# checkpoints converted from that code need to compute what they computed there.
ATTENTION_BLOCKS = {"fdm": AttentionBlock, "published": PublishedAttentionBlock}
# `observed_timestep`: the time embedding observed frames get. "zero": their level (0, the
# contract); "job": the job's level, as the published FDM code gave every frame of a job.
OBSERVED_TIMESTEPS = ("zero", "job")


@dataclass(frozen=True)
class FDMUNetConfig(Config):
    """Constructor arguments of FDMUNet. `channel_mult=()` means the default for `image_size`."""

    image_size: int = 32
    channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = ()
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    max_frames: int = 20
    dropout: float = 0.0
    attention: str = "fdm"  # see ATTENTION_BLOCKS
    observed_timestep: str = "zero"  # see OBSERVED_TIMESTEPS
    timestep_scale: float = 1.0  # the network sees level * scale (improved DDPM's rescale_timesteps: 1000 / N)

    def __post_init__(self):
        for name in ("image_size", "channels", "base_channels", "num_res_blocks", "num_heads", "max_frames"):
            if int(getattr(self, name)) < 1:
                raise FdmError(f"FDMUNetConfig.{name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 <= self.dropout < 1.0:
            raise FdmError(f"FDMUNetConfig.dropout must be in [0, 1) (got {self.dropout})")
        if self.attention not in ATTENTION_BLOCKS:
            raise FdmError(f"FDMUNetConfig.attention must be one of {', '.join(ATTENTION_BLOCKS)} "
                           f"(got {self.attention!r})")
        if self.observed_timestep not in OBSERVED_TIMESTEPS:
            raise FdmError(f"FDMUNetConfig.observed_timestep must be one of {', '.join(OBSERVED_TIMESTEPS)} "
                           f"(got {self.observed_timestep!r})")
        if not self.timestep_scale > 0:
            raise FdmError(f"FDMUNetConfig.timestep_scale must be > 0 (got {self.timestep_scale})")
        mults = self.mults
        if any(m < 1 for m in mults):
            raise FdmError(f"FDMUNetConfig.channel_mult entries must be >= 1 (got {mults})")
        if self.image_size % 2 ** (len(mults) - 1):
            raise FdmError(
                f"FDMUNetConfig.image_size {self.image_size} is not divisible by 2^{len(mults) - 1} "
                f"(channel_mult {mults})"
            )
        for level, m in enumerate(mults):
            res = self.image_size >> level
            if (res in self.attention_resolutions or level == len(mults) - 1) and (m * self.base_channels) % self.num_heads:
                raise FdmError(
                    f"FDMUNetConfig.num_heads {self.num_heads} does not divide {m * self.base_channels} channels "
                    f"at resolution {res}"
                )

    @property
    def mults(self) -> tuple[int, ...]:
        """The channel multipliers in use (explicit, or the default for the image size)."""
        if self.channel_mult:
            return tuple(self.channel_mult)
        if self.image_size not in DEFAULT_CHANNEL_MULT:
            raise FdmError(
                f"no default channel_mult for image_size {self.image_size} "
                f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)}); set channel_mult"
            )
        return DEFAULT_CHANNEL_MULT[self.image_size]

    @property
    def embed_dim(self) -> int:
        return 4 * self.base_channels


class Stage(nn.ModuleList):
    """A sequence of ResBlocks / attention blocks / resamplers fed what each needs."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):  # and its variants
                h = layer(h, ctx)
            else:
                h = layer(h)
        return h


class FDMUNet(nn.Module):
    """FDM denoiser: pred [B, F, C, H, W] = model(x, frame_indices, noise_levels, observed, valid)."""

    Config = FDMUNetConfig

    def __init__(self, config: FDMUNetConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.channels = config.channels
        self.max_frames = config.max_frames
        base, emb_dim, mults = config.base_channels, config.embed_dim, config.mults
        attn_res, heads = set(config.attention_resolutions), config.num_heads
        attention_block = ATTENTION_BLOCKS[config.attention]

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, config.dropout)

        self.time_embed = TimestepEmbedding(base, emb_dim)
        self.in_conv = nn.Conv2d(config.channels + 1, base, 3, padding=1)

        ch, res = base, config.image_size
        skips = [ch]
        self.down = nn.ModuleList()
        for level, m in enumerate(mults):
            for _ in range(config.num_res_blocks):
                stage = Stage([res_block(ch, m * base)])
                ch = m * base
                if res in attn_res:
                    stage.append(attention_block(ch, heads, emb_dim))
                self.down.append(stage)
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(Stage([Downsample(ch)]))
                skips.append(ch)
                res //= 2

        self.middle = Stage([res_block(ch, ch), attention_block(ch, heads, emb_dim), res_block(ch, ch)])

        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for i in range(config.num_res_blocks + 1):
                stage = Stage([res_block(ch + skips.pop(), m * base)])
                ch = m * base
                if res in attn_res:
                    stage.append(attention_block(ch, heads, emb_dim))
                if level > 0 and i == config.num_res_blocks:
                    stage.append(Upsample(ch))
                    res *= 2
                self.up.append(stage)
        assert not skips, "every skip connection must be consumed"

        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(nn.Conv2d(ch, config.channels, 3, padding=1))
        # Conv weights in channels-last, like the activations, so no call reorders them.
        # Checkpoints store contiguous copies; load_state_dict keeps these strides.
        self.to(memory_format=torch.channels_last)

    def forward(
        self,
        x: torch.Tensor,
        frame_indices: torch.Tensor,
        noise_levels: torch.Tensor,
        observed: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, F, C, H, W]; frame_indices [B, F] int64; noise_levels [B, F] float timesteps;
        observed [B, F] bool; valid [B, F] bool or None -> pred [B, F, C, H, W]."""
        check_contract_inputs(self, x, frame_indices, noise_levels, observed, valid)
        B, Fr, _, H, W = x.shape
        emb = self.time_embed(network_timesteps(self.config, noise_levels, observed, valid).reshape(-1))  # [B*F, E]
        mask = padding_mask(valid)  # [B, F, F] or None
        ctx = FrameContext(
            batch=B,
            frames=Fr,
            emb=emb.view(B, Fr, -1),  # [B, F, E]
            rel_feats=relative_features(frame_indices.long()),  # [B, F, F, 3]
            mask=mask,
            valid=None if mask is None else valid,
        )
        indicator = observed.to(x.dtype)[:, :, None, None, None].expand(B, Fr, 1, H, W)  # [B, F, 1, H, W]
        h = rearrange(torch.cat([x, indicator], dim=2), "b f c h w -> (b f) c h w")  # [B*F, C+1, H, W]
        # Channels-last activations: native layout for oneDNN/cuDNN convolutions, and the
        # attention blocks' token layouts become free views.
        h = h.contiguous(memory_format=torch.channels_last)

        h = self.in_conv(h)  # [B*F, base, H, W]
        skips = [h]
        for stage in self.down:
            h = stage(h, emb, ctx)
            skips.append(h)
        h = self.middle(h, emb, ctx)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, ctx)
        h = self.out_conv(F.silu(self.out_norm(h), inplace=True))  # [B*F, C, H, W]
        return rearrange(h.contiguous(), "(b f) c h w -> b f c h w", b=B)


def network_timesteps(config: FDMUNetConfig, noise_levels: torch.Tensor, observed: torch.Tensor,
                      valid: torch.Tensor | None) -> torch.Tensor:
    """[B, F] levels -> the [B, F] timesteps the time embedding sees (config.observed_timestep,
    config.timestep_scale). "job": every non-latent slot (observed, padding) takes its job's
    level, the largest of its latent frames' (all latent frames share it in FDM-style jobs)."""
    t = noise_levels
    if config.observed_timestep == "job":
        latent = ~observed if valid is None else valid & ~observed
        t_job = torch.where(latent, t, torch.zeros_like(t)).amax(dim=1, keepdim=True)  # [B, 1]
        t = torch.where(latent, t, t_job.expand_as(t))
    return t * config.timestep_scale if config.timestep_scale != 1.0 else t


MODELS.register("fdm", FDMUNet)

PRESETS: dict[str, FDMUNetConfig] = {
    "tiny": FDMUNetConfig(
        image_size=32, channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=4, max_frames=10,
    ),
    "fdm-carla": FDMUNetConfig(
        image_size=128, base_channels=128, channel_mult=(1, 1, 2, 3, 4), num_res_blocks=1, num_heads=4, max_frames=20
    ),
    "fdm-minerl": FDMUNetConfig(
        image_size=64, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=1, num_heads=4, max_frames=20
    ),
    "fdm-mazes": FDMUNetConfig(
        image_size=64, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=1, num_heads=4, max_frames=20
    ),
}


def fdm_preset(name: str) -> FDMUNetConfig:
    """The FDMUNetConfig of a named preset (see PRESETS)."""
    if name not in PRESETS:
        raise FdmError(f"unknown FDM preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
