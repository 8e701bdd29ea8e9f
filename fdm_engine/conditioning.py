"""Where the given frames of a sampling run come from: a video file, a dataset, or the oracle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fdm_engine.errors import FdmError

VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".npy")


@dataclasses.dataclass
class Conditioning:
    given: torch.Tensor  # [V, n_obs, C, H, W], model space
    length: int  # frames to sample per video (T)
    source: str


def load_conditioning(cfg, loaded, video_ids: list[int]) -> Conditioning:
    """Given frames for the videos `video_ids` of a run configured by `cfg` (a SampleConfig)."""
    model = loaded.model
    shape = (model.channels, model.image_size, model.image_size)
    if cfg.obs is None and cfg.n_obs == 0:
        length = _need_length(cfg, None, "--n-obs 0")
        return Conditioning(torch.zeros(len(video_ids), 0, *shape), length, "unconditional")
    if cfg.obs is None and loaded.model_name == "oracle":
        length = _need_length(cfg, None, "the oracle")
        g = torch.Generator().manual_seed(cfg.seed)
        videos = model.sample_prior(cfg.num_videos, max(cfg.n_obs, 1), generator=g)[video_ids]
        return Conditioning(videos[:, :cfg.n_obs], length, "oracle prior")
    if cfg.obs is not None and Path(cfg.obs).suffix.lower() in VIDEO_SUFFIXES:
        return _from_file(cfg, Path(cfg.obs), shape, len(video_ids))
    spec = cfg.obs or (f"{loaded.extra['dataset']}:test" if loaded.extra.get("dataset") else None)
    if not spec:
        raise FdmError(f"--n-obs {cfg.n_obs} needs conditioning frames: pass --obs VIDEO_OR_DATASET "
                       f"({loaded.path} records no dataset)")
    data_dir = cfg.data_dir if cfg.obs else _checkpoint_data_dir(cfg, loaded)
    return _from_dataset(cfg, spec, shape, video_ids, data_dir)


def _checkpoint_data_dir(cfg, loaded):
    """--data-dir, else the usual lookup ($FDM_DATA_DIR/NAME, datasets/NAME), else the folder the
    checkpoint was trained from, when it still exists here."""
    from fdm_engine.datasets import resolve_data_dir

    if cfg.data_dir is not None:
        return cfg.data_dir
    try:
        return resolve_data_dir(loaded.extra["dataset"])
    except FdmError:
        recorded = loaded.extra.get("data_dir")
        if recorded and Path(recorded).is_dir():
            return recorded
        raise


def _need_length(cfg, video_length: int | None, what: str) -> int:
    length = cfg.length or video_length
    if length is None:
        raise FdmError(f"--length is required with {what} (no conditioning video to take it from)")
    if cfg.n_obs >= length:
        raise FdmError(f"--n-obs must be < --length (got {cfg.n_obs} >= {length})")
    return length


def _check_frames(frames: torch.Tensor, shape: tuple, n_obs: int, where: str) -> None:
    """frames [T, C, H, W] against the model's (C, H, W) and the number of given frames."""
    if tuple(frames.shape[1:]) != shape:
        c, h, w = frames.shape[1:]
        raise FdmError(f"{where}: frames are {c}x{h}x{w} (channels x height x width) but the model "
                       f"takes {shape[0]}x{shape[1]}x{shape[2]}")
    if frames.shape[0] < n_obs:
        raise FdmError(f"{where}: has {frames.shape[0]} frames, fewer than --n-obs {n_obs}")


def _from_file(cfg, path: Path, shape: tuple, n_videos: int) -> Conditioning:
    from fdm_engine.video_io import from_uint8, read_video

    frames = from_uint8(torch.from_numpy(read_video(path)))  # [T, C, H, W]
    if shape[0] == 1 and frames.shape[1] == 3 and bool((frames == frames[:, :1]).all()):
        frames = frames[:, :1]  # a grey video stored as RGB (as mp4 and gif store it)
    _check_frames(frames, shape, cfg.n_obs, str(path))
    length = _need_length(cfg, frames.shape[0], str(path))
    given = frames[:cfg.n_obs].unsqueeze(0).expand(n_videos, -1, -1, -1, -1).clone()
    return Conditioning(given, length, str(path))


def _from_dataset(cfg, spec: str, shape: tuple, video_ids: list[int], data_dir) -> Conditioning:
    """spec NAME[:split[:index]]: videos index + video_ids[v] of the split, cropped and resized to
    the model's frames as training sees them."""
    from fdm_engine.datasets import open_dataset, parse_dataset_ref

    ref = parse_dataset_ref(spec)
    data = open_dataset(ref.name, data_dir, split=ref.split, image_size=shape[1], channels=shape[0])
    if ref.index + max(video_ids) >= len(data):
        raise FdmError(f"--obs {spec}: split {ref.split!r} has {len(data)} videos, --num-videos "
                       f"{cfg.num_videos} from index {ref.index} needs {ref.index + cfg.num_videos}")
    given = []
    for v in video_ids:
        frames = data.clip(ref.index + v, length=max(cfg.n_obs, 1), start=0)  # [T, C, H, W] in [-1, 1]
        _check_frames(frames, shape, cfg.n_obs, f"{spec} video {ref.index + v}")
        given.append(frames[:cfg.n_obs])
    length = _need_length(cfg, data.video_length, spec)
    return Conditioning(torch.stack(given), length, spec)
