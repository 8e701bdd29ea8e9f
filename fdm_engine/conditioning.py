"""Where the given frames of a sampling run come from: a video file, a dataset, or the oracle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import torch

from fdm_engine.errors import FdmError

VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".npy")


@dataclasses.dataclass
class Conditioning:
    """The given frames of every video of a run, loaded one video at a time (so memory does not
    grow with the number of videos)."""

    length: int  # frames to sample per video (T)
    source: str
    n_obs: int
    frames_of: Callable[[int], torch.Tensor]  # global video index -> [n_obs, C, H, W], model space

    def given(self, video: int) -> torch.Tensor:
        return self.frames_of(video)

    def stack(self, videos: Sequence[int]) -> torch.Tensor:
        """[V, n_obs, C, H, W] for the given videos."""
        return torch.stack([self.frames_of(v) for v in videos])


def prior_seed(seed: int, video: int) -> int:
    """The oracle's given frames of one video: a seed per (run seed, video)."""
    return (seed * 1_000_033 + video) * 2_654_435_761 % (2**63 - 1)


def load_conditioning(loaded, *, n_obs: int, length: int | None, num_videos: int, seed: int = 0,
                      obs: str | None = None, data_dir: str | None = None) -> Conditioning:
    """Where the given frames of a run of `num_videos` videos come from.

    obs: a video file, a dataset NAME[:split[:index]], or None (the oracle draws from its prior, a
    checkpoint takes its dataset's test split; nothing when n_obs = 0). length: frames per video
    (None: the conditioning videos' length).
    """
    model = loaded.model
    shape = (model.channels, model.image_size, model.image_size)
    if obs is None and n_obs == 0:
        length = _need_length(length, None, n_obs, "--n-obs 0")
        return Conditioning(length, "unconditional", 0, lambda v: torch.zeros(0, *shape))
    if obs is None and loaded.model_name == "oracle":
        length = _need_length(length, None, n_obs, "the oracle")

        def prior(video: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(prior_seed(seed, video))
            return model.sample_prior(1, n_obs, generator=g)[0]

        return Conditioning(length, "oracle prior", n_obs, prior)
    if obs is not None and Path(obs).suffix.lower() in VIDEO_SUFFIXES:
        return _from_file(Path(obs), shape, n_obs, length)
    spec = obs or (f"{loaded.extra['dataset']}:test" if loaded.extra.get("dataset") else None)
    if not spec:
        raise FdmError(f"--n-obs {n_obs} needs conditioning frames: pass --obs VIDEO_OR_DATASET "
                       f"({loaded.path} records no dataset)")
    return _from_dataset(spec, shape, n_obs, length, num_videos, data_dir, loaded.extra)


def recorded_data_dir(extra: dict) -> str | None:
    """The dataset folder a checkpoint names: its own `data_dir`, else its training run's."""
    return extra.get("data_dir") or (extra.get("train_config") or {}).get("data_dir")


def open_conditioning_data(name: str, split: str, data_dir, extra: dict | None, *, image_size: int,
                           channels: int, length: int | None = None):
    """One split of dataset `name`, found the same way whether the run names it (--obs NAME) or
    takes its checkpoint's own: `data_dir` (--data-dir) when given; else the usual lookup
    ($FDM_DATA_DIR/NAME, datasets/NAME); else the folder the checkpoint (`extra`) was trained from,
    when it still exists here; else, for a procedural dataset, its videos generated on the fly
    (`GeneratedSplit`: exactly the videos `fdm data make` writes with the checkpoint's recorded
    generator settings, else with the generator's defaults at image_size, seed 0 and `length`).
    extra None: the run's checkpoint could not be read, so generated videos are refused (they could
    be other videos than the run's)."""
    from fdm_engine.datasets import DATASETS, open_dataset, resolve_data_dir

    DATASETS.get(name)  # an unknown name: the line lists the known ones
    if data_dir is None:
        try:
            data_dir = resolve_data_dir(name)
        except FdmError:
            recorded = recorded_data_dir(extra) if extra and extra.get("dataset") == name else None
            if recorded and Path(recorded).is_dir():
                data_dir = recorded
            else:
                if extra is None:  # the run's checkpoint is not readable here: its data settings are unknown
                    raise FdmError(f"dataset {name!r}: no folder here, and the settings its videos were generated "
                                   f"with are in the run's checkpoint, which cannot be read: pass --data-dir DIR")
                generated = _generated_split(name, split, extra, image_size, channels, length)
                if generated is None:
                    raise
                return generated
    return open_dataset(name, data_dir, split=split, image_size=image_size, channels=channels)


def _generated_split(name, split, extra, image_size, channels, length):
    from fdm_engine.datasets import GENERATORS
    from fdm_engine.datasets.procedural.generated import GeneratedSplit

    if name not in GENERATORS:
        return None
    made = extra.get("data") or {}  # the manifest of the checkpoint's training data (`fdm demo export`)
    if made.get("name") == name and {"length", "size"} <= made.keys():
        return GeneratedSplit(name, split, length=int(made["length"]), size=int(made["size"]),
                              seed=int(made.get("seed", 0)), params=made.get("config"),
                              num_videos=(made.get("splits") or {}).get(split), image_size=image_size,
                              channels=channels)
    if length is None:
        raise FdmError(f"dataset {name!r}: no folder here, and its videos are generated on the fly "
                       f"without recorded settings: pass --length (or --data-dir DIR)")
    return GeneratedSplit(name, split, length=length, size=image_size, image_size=image_size,
                          channels=channels)


def _need_length(length: int | None, video_length: int | None, n_obs: int, what: str) -> int:
    length = length or video_length
    if length is None:
        raise FdmError(f"--length is required with {what} (no conditioning video to take it from)")
    if n_obs >= length:
        raise FdmError(f"--n-obs must be < --length (got {n_obs} >= {length})")
    return length


def _check_frames(frames: torch.Tensor, shape: tuple, n_obs: int, where: str) -> None:
    """frames [T, C, H, W] against the model's (C, H, W) and the number of given frames."""
    if tuple(frames.shape[1:]) != shape:
        c, h, w = frames.shape[1:]
        raise FdmError(f"{where}: frames are {c}x{h}x{w} (channels x height x width) but the model "
                       f"takes {shape[0]}x{shape[1]}x{shape[2]}")
    if frames.shape[0] < n_obs:
        raise FdmError(f"{where}: has {frames.shape[0]} frames, fewer than --n-obs {n_obs}")


def _from_file(path: Path, shape: tuple, n_obs: int, length: int | None) -> Conditioning:
    """Every video continues the same file's first n_obs frames."""
    from fdm_engine.video_io import from_uint8, read_video

    frames = from_uint8(torch.from_numpy(read_video(path)))  # [T, C, H, W]
    if shape[0] == 1 and frames.shape[1] == 3 and bool((frames == frames[:, :1]).all()):
        frames = frames[:, :1]  # a grey video stored as RGB (as mp4 and gif store it)
    _check_frames(frames, shape, n_obs, str(path))
    length = _need_length(length, frames.shape[0], n_obs, str(path))
    given = frames[:n_obs].clone()
    return Conditioning(length, str(path), n_obs, lambda v: given)


def _from_dataset(spec: str, shape: tuple, n_obs: int, length: int | None, num_videos: int,
                  data_dir, extra: dict) -> Conditioning:
    """spec NAME[:split[:index]]: video index + v of the split for video v, cropped and resized to
    the model's frames as training sees them."""
    from fdm_engine.datasets import DATASETS, parse_dataset_ref

    ref = parse_dataset_ref(spec)
    if ref.name not in DATASETS:  # most likely a mistyped file (`clip.mp4`, `frames/`): say that first
        raise FdmError(f"--obs {spec}: no such video file ({', '.join(sorted(VIDEO_SUFFIXES))}), nor a dataset "
                       f"NAME[:split[:index]] (datasets: {', '.join(DATASETS.names())})")
    data = open_conditioning_data(ref.name, ref.split, data_dir, extra, image_size=shape[1],
                                  channels=shape[0], length=length)
    if ref.index + num_videos > len(data):
        raise FdmError(f"--obs {spec}: split {ref.split!r} has {len(data)} videos, --num-videos "
                       f"{num_videos} from index {ref.index} needs {ref.index + num_videos}")

    def clip(video: int) -> torch.Tensor:
        frames = data.clip(ref.index + video, length=max(n_obs, 1), start=0)  # [T, C, H, W] in [-1, 1]
        _check_frames(frames, shape, n_obs, f"{spec} video {ref.index + video}")
        return frames[:n_obs]

    clip(0)  # a mismatched dataset fails now, not after the first videos are sampled
    length = _need_length(length, data.video_length, n_obs, spec)
    return Conditioning(length, spec, n_obs, clip)
