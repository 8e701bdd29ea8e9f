"""video_diffusion checkpoints (seed 004; swookey-thinky/video_diffusion).

Its trainer saves `diffusion-{step}.pt` = {"step", "model_state_dict", "optimizer_state_dicts",
"loss", "config"}; the YAML config it was trained with names the score network under
`diffusion.score_network.target`. The repository holds several model families:

- `unet_3d.Unet` ("Video Diffusion Models"): a VDM-style UNet, but built from other blocks than
  our VDM UNet (BigGAN ResBlocks whose time projection is a stack of MLPs, average-pool / nearest
  resampling, GroupNorm temporal attention with Shaw-style relative key/value embeddings sized to
  the training length, heads from a fixed head width) and trained on a continuous-time cosine
  log-SNR schedule with v-prediction and a log-SNR time input, none of which fdm has yet;
- `unet_factorized3d.UNet`: its port of the FDM network (use `--from fdm` on checkpoints of the
  published FDM code);
- `unet_pseudo3d.Unet` (Make-A-Video) and the image UNets: no fdm architecture corresponds.

Conversion is not supported for any of them yet: each is refused with a line naming the family.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fdm_engine.errors import FdmError
from fdm_engine.published import PUBLISHED_FORMATS, LoadedPublished, PublishedFormat, load_pickle

FAMILIES = {
    "video_diffusion.score_networks.unet_3d.Unet":
        "its Video Diffusion Models UNet differs from fdm's VDM UNet (BigGAN blocks with MLP time projections, "
        "Shaw relative-position temporal attention, log-SNR time input, continuous v-prediction); not supported yet",
    "video_diffusion.score_networks.unet_factorized3d.UNet":
        "its port of the FDM network is not supported yet (published FDM checkpoints: --from fdm)",
    "video_diffusion.score_networks.unet_pseudo3d.Unet":
        "Make-A-Video's pseudo-3D UNet has no fdm counterpart",
}


def score_network_target(text: str, where: str) -> str:
    """The `target:` of the `score_network:` section of a video_diffusion YAML config."""
    m = re.search(r"^(\s*)score_network:\s*\n(?:\1\s+.*\n)*?\1\s+target:\s*['\"]?([\w.]+)", text, re.MULTILINE)
    if m is None:
        raise FdmError(f"{where}: no diffusion.score_network.target (not a video_diffusion config)")
    return m.group(2)


class VideoDiffusionFormat(PublishedFormat):
    needs = "config"
    needs_hint = "e.g. --config configs/moving_mnist/video_diffusion_models.yaml"
    description = "video_diffusion trainer files (diffusion-N.pt) with the YAML config they were trained with"

    def detect(self, obj: Any) -> bool:
        return isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict) and \
            isinstance(obj.get("config"), dict) and "diffusion" in obj["config"]

    def read(self, path: Path, flags: str | None, config_file: Path | None) -> LoadedPublished:
        if flags:
            raise FdmError(f"{path}: --from video-diffusion takes its settings from --config, not --flags")
        try:
            text = Path(config_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise FdmError(f"--config {config_file}: cannot read it ({e})") from None
        target = score_network_target(text, f"--config {config_file}")
        obj = load_pickle(path)  # refuse hostile or broken files before anything else
        if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
            raise FdmError(f"{path}: not a video_diffusion checkpoint (expected a dict with 'model_state_dict')")
        why = FAMILIES.get(target, "no fdm architecture corresponds")
        raise FdmError(f"{path}: --config {config_file} trains {target}: {why}")


PUBLISHED_FORMATS.register("video-diffusion", VideoDiffusionFormat())
