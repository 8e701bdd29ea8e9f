"""VDM (Ho et al. 2022) and SSM (the VDM UNet with bidirectional S4D temporal layers) denoisers.

A space-time factorised 3D UNet. Every 2D conv is a 1x3x3 conv, i.e. a per-frame 2D conv with
the frames folded into the batch axis; there is no temporal down-sampling. At the
`attention_resolutions` (and in the middle) each ResBlock is followed by spatial attention over
the H*W positions of each frame, then a temporal layer over the F frames at each position
(`temporal_resolutions` may add temporal layers at other resolutions). The temporal layer is a
slot (fdm_engine.models.temporal_layers):

- "vdm" (VDMUNet): temporal attention with a learned relative position bias of
  d = frame_index[query] - frame_index[key]; the absolute indices never enter, so a constant shift
  of all frame indices leaves the output unchanged, and slots may be in any order.
- "ssm" (SSMUNet): the same UNet with `temporal_layer="bi-s4d"` (SSM paper, seed 000). The SSM
  scans frames in ascending frame-index order; gaps between indices are ignored, so it is
  faithful to its training only for contiguous frames (autoregressive schemes).

Per-frame noise levels give per-frame time embeddings (every ResBlock is per frame), so frames in
one call may sit at different diffusion times. An extra input plane is 1 on observed frames: the
same network can be trained unconditionally (all zeros; use with reconstruction guidance) or
conditionally. Padding slots (valid=False) are isolated in every temporal layer; everything else
is per frame, so real frames' outputs do not depend on padding.

Preset mapping notes: heads are `num_heads` with head width channels / num_heads at every level
(as in FDM), so the seeds' "heads x 64" is met at the level whose width is 64 x heads. The seeds'
own UNets differ in detail (lucidrains-style blocks, linear spatial attention at every level);
ours keep the improved-DDPM blocks shared with FDM and are not weight-compatible with them.
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
from fdm_engine.models.contract import check_contract_inputs
from fdm_engine.models.blocks import (
    Downsample,
    ResBlock,
    TimestepEmbedding,
    Upsample,
    group_norm,
    zero_module,
)
from fdm_engine.models.fdm_unet import DEFAULT_CHANNEL_MULT
from fdm_engine.models.ssm_layers import mix_name
from fdm_engine.models.temporal_layers import (
    TEMPORAL_LAYERS,
    TemporalContext,
    TemporalLayer,
    build_temporal_layer,
)

# ---- UNet plumbing shared with RaMViD (fdm_engine.models.ramvid_unet) -------------------------


def resolve_channel_mult(channel_mult: tuple[int, ...], image_size: int, defaults: dict) -> tuple[int, ...]:
    """`channel_mult` if given, else the default for `image_size` from `defaults` (FdmError if none)."""
    if channel_mult:
        return tuple(channel_mult)
    if image_size not in defaults:
        raise FdmError(
            f"no default channel_mult for image_size {image_size} (defaults exist for {sorted(defaults)}); "
            f"set channel_mult"
        )
    return tuple(defaults[image_size])


def check_unet_shape(cfg, name: str, attention_levels: set[int]) -> None:
    """Validate the UNet fields every config here has (FdmError naming the bad value).

    Heads must divide the width of every level in `attention_levels` and of the middle.
    """
    for field in ("image_size", "channels", "base_channels", "num_res_blocks", "num_heads"):
        if int(getattr(cfg, field)) < 1:
            raise FdmError(f"{name}.{field} must be >= 1 (got {getattr(cfg, field)})")
    if not 0.0 <= cfg.dropout < 1.0:
        raise FdmError(f"{name}.dropout must be in [0, 1) (got {cfg.dropout})")
    mults = cfg.mults
    if any(m < 1 for m in mults):
        raise FdmError(f"{name}.channel_mult entries must be >= 1 (got {mults})")
    if cfg.image_size % 2 ** (len(mults) - 1):
        raise FdmError(
            f"{name}.image_size {cfg.image_size} is not divisible by 2^{len(mults) - 1} (channel_mult {mults})"
        )
    for level, m in enumerate(mults):
        res = cfg.image_size >> level
        if (res in attention_levels or level == len(mults) - 1) and (m * cfg.base_channels) % cfg.num_heads:
            raise FdmError(
                f"{name}.num_heads {cfg.num_heads} does not divide {m * cfg.base_channels} channels at resolution {res}"
            )


class Stage(nn.ModuleList):
    """A run of ResBlocks / attention / temporal layers / resamplers, each fed what it needs."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, ctx: TemporalContext | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, TemporalLayer):
                h = layer(h, ctx)
            else:
                h = layer(h)
        return h


def build_levels(cfg, res_block, mixers, down=Downsample, up=Upsample):
    """The improved-DDPM UNet layout: (down stages, middle stage, up stages, output width).

    res_block(cin, cout) and mixers(ch, res) -> [modules after a ResBlock at feature resolution
    `res`; res=None for the middle] shape the blocks; down(ch) / up(ch) are the resamplers.
    """
    base, mults, n_res = cfg.base_channels, cfg.mults, cfg.num_res_blocks
    ch, res = base, cfg.image_size
    skips = [ch]
    down_stages = nn.ModuleList()
    for level, m in enumerate(mults):
        for _ in range(n_res):
            down_stages.append(Stage([res_block(ch, m * base), *mixers(m * base, res)]))
            ch = m * base
            skips.append(ch)
        if level < len(mults) - 1:
            down_stages.append(Stage([down(ch)]))
            skips.append(ch)
            res //= 2
    middle = Stage([res_block(ch, ch), *mixers(ch, None), res_block(ch, ch)])
    up_stages = nn.ModuleList()
    for level, m in reversed(list(enumerate(mults))):
        for i in range(n_res + 1):
            stage = Stage([res_block(ch + skips.pop(), m * base), *mixers(m * base, res)])
            ch = m * base
            if level > 0 and i == n_res:
                stage.append(up(ch))
                res *= 2
            up_stages.append(stage)
    assert not skips, "every skip connection must be consumed"
    return down_stages, middle, up_stages, ch


# ---- VDM / SSM ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VDMUNetConfig(Config):
    """Constructor arguments of VDMUNet.

    channel_mult=() means the default for `image_size`; embed_dim=0 means 4 x base_channels;
    temporal_resolutions=() means the attention resolutions (a temporal layer after each spatial
    attention, as in VDM). `num_frames` is the clip length the model is trained and sampled with
    (the default K for schemes); the network itself accepts any number of frames.
    The ssm_* fields configure the "bi-s4d" temporal layer and are unused by "attn"; `ssm_mix`
    is "sum" or "glu" (models.ssm_layers; the seed's `--s4d_version` 16 / 8 and the former field
    `ssm_version` are accepted).
    """

    RENAMED = {"ssm_version": "ssm_mix"}

    image_size: int = 32
    channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = ()
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    dropout: float = 0.0
    embed_dim: int = 0
    num_frames: int = 16
    temporal_layer: str = "attn"
    temporal_resolutions: tuple[int, ...] = ()
    rel_buckets: int = 32
    rel_max_distance: int = 128
    ssm_state_size: int = 512
    ssm_mlp_hidden: int = 512
    ssm_mix: str = "sum"

    def __post_init__(self):
        name = type(self).__name__
        object.__setattr__(self, "ssm_mix", mix_name(self.ssm_mix))  # the seed's 16 / v8 stored as sum / glu
        check_unet_shape(self, name, attention_levels=set(self.attention_resolutions) | set(self.temporal_resolutions))
        for field in ("num_frames", "ssm_state_size", "ssm_mlp_hidden"):
            if getattr(self, field) < 1:
                raise FdmError(f"{name}.{field} must be >= 1 (got {getattr(self, field)})")
        if self.embed_dim < 0:
            raise FdmError(f"{name}.embed_dim must be >= 0 (0 = 4 x base_channels) (got {self.embed_dim})")
        if self.temporal_layer not in TEMPORAL_LAYERS:
            raise FdmError(
                f"{name}.temporal_layer {self.temporal_layer!r} is unknown "
                f"(known: {', '.join(TEMPORAL_LAYERS.names())})"
            )
        if self.rel_buckets < 4 or self.rel_max_distance <= self.rel_buckets // 4:
            raise FdmError(
                f"{name} needs rel_buckets >= 4 and rel_max_distance > rel_buckets // 4 "
                f"(got {self.rel_buckets}, {self.rel_max_distance})"
            )

    @property
    def mults(self) -> tuple[int, ...]:
        """The channel multipliers in use (explicit, or the default for the image size)."""
        return resolve_channel_mult(self.channel_mult, self.image_size, DEFAULT_CHANNEL_MULT)

    @property
    def time_embed_dim(self) -> int:
        return self.embed_dim or 4 * self.base_channels

    @property
    def temporal_levels(self) -> set[int]:
        """Feature resolutions that get a temporal layer (besides the middle)."""
        return set(self.temporal_resolutions or self.attention_resolutions)


@dataclass(frozen=True)
class SSMUNetConfig(VDMUNetConfig):
    """VDMUNetConfig whose temporal layer defaults to the bidirectional S4D ("bi-s4d")."""

    temporal_layer: str = "bi-s4d"


VDM_PRESETS: dict[str, VDMUNetConfig] = {
    "tiny": VDMUNetConfig(
        image_size=32, channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=4, num_frames=10,
    ),
    # Seed 004 (Moving MNIST): 32 px, 16 frames, 1 channel; 128 features, mults (1, 2, 2, 2),
    # 2 res blocks, attention at 16 and 8 with 4 heads, dropout 0.1, time embedding 4 x 128.
    "vdm-mmnist-32": VDMUNetConfig(
        image_size=32, channels=1, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16, 8), num_heads=4, dropout=0.1, num_frames=16,
    ),
}


def _ssm_paper(image_size: int, num_frames: int) -> SSMUNetConfig:
    # Seed 000's table: base 64, mults (1, 2, 4, 8), time embedding 1024 (2 linears), 8 heads,
    # SSM state 512 and MLP 512 (bi-s4d, directions summed: the seed's v16). Temporal layers at every level, as in its UNet.
    levels = tuple(image_size >> i for i in range(4))
    return SSMUNetConfig(
        image_size=image_size, channels=3, base_channels=64, channel_mult=(1, 2, 4, 8), num_res_blocks=2,
        attention_resolutions=(16, 8), num_heads=8, embed_dim=1024, num_frames=num_frames,
        temporal_resolutions=levels, ssm_state_size=512, ssm_mlp_hidden=512, ssm_mix="sum",
    )


SSM_PRESETS: dict[str, SSMUNetConfig] = {
    "tiny": SSMUNetConfig(
        image_size=32, channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(16, 8), num_heads=4, num_frames=10, ssm_state_size=64, ssm_mlp_hidden=64,
    ),
    "ssm-ucf101-32": _ssm_paper(32, 16),
    "ssm-ucf101-64": _ssm_paper(64, 16),
    "ssm-minerl-32-64f": _ssm_paper(32, 64),
    "ssm-minerl-32-150f": _ssm_paper(32, 150),
}


class VDMUNet(nn.Module):
    """VDM denoiser: pred [B, F, C, H, W] = model(x, frame_indices, noise_levels, observed, valid)."""

    Config = VDMUNetConfig
    PRESETS = VDM_PRESETS

    def __init__(self, config: VDMUNetConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.channels = config.channels
        self.max_frames = None  # any number of frames: temporal layers are length-agnostic
        emb_dim, heads = config.time_embed_dim, config.num_heads
        attn_res, temporal_res = set(config.attention_resolutions), config.temporal_levels

        def mixers(ch: int, res: int | None) -> list[nn.Module]:
            layers: list[nn.Module] = []
            if res is None or res in attn_res:  # None: the middle block
                layers.append(SpatialAttention(ch, heads))
            if res is None or res in temporal_res:
                layers.append(build_temporal_layer(config.temporal_layer, ch, config))
            return layers

        self.time_embed = TimestepEmbedding(config.base_channels, emb_dim)
        self.in_conv = nn.Conv2d(config.channels + 1, config.base_channels, 3, padding=1)
        self.down, self.middle, self.up, ch = build_levels(
            config, res_block=lambda cin, cout: ResBlock(cin, cout, emb_dim, config.dropout), mixers=mixers
        )
        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(nn.Conv2d(ch, config.channels, 3, padding=1))
        # Channels-last, like FDM: the native layout for per-frame convs, and token layouts of
        # the attention and temporal layers become free views.
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
        emb = self.time_embed(noise_levels.reshape(-1))  # [B*F, E] per-frame time embedding
        ctx = TemporalContext(B, Fr, frame_indices.long(), valid)
        indicator = observed.to(x.dtype)[:, :, None, None, None].expand(B, Fr, 1, H, W)  # [B, F, 1, H, W]
        h = rearrange(torch.cat([x, indicator], dim=2), "b f c h w -> (b f) c h w")  # [B*F, C+1, H, W]
        h = h.contiguous(memory_format=torch.channels_last)

        h = self.in_conv(h)  # [B*F, base, H, W]
        skips = [h]
        for stage in self.down:
            h = stage(h, emb, ctx)
            skips.append(h)
        h = self.middle(h, emb, ctx)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, ctx)
        h = self.out_conv(F.silu(self.out_norm(h)))  # [B*F, C, H, W]
        return rearrange(h.contiguous(), "(b f) c h w -> b f c h w", b=B)


class SSMUNet(VDMUNet):
    """SSM denoiser (seed 000): VDMUNet with bidirectional S4D temporal layers (`SSMUNetConfig`)."""

    Config = SSMUNetConfig
    PRESETS = SSM_PRESETS


MODELS.register("vdm", VDMUNet)
MODELS.register("ssm", SSMUNet)
