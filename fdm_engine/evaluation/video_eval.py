"""`fdm eval video`: score a folder written by `fdm sample` against the ground truth it continued.

Samples: SAMPLES_DIR/video_{i:04d}.npz (`frames` uint8 [T, H, W, C]), else video_{i:04d}.mp4/.gif;
SAMPLES_DIR/plan.json holds the run's config (n_obs, obs, data_dir). Ground truth, first found:
- `data`: a video file (the same truth for every sample, as `fdm sample --obs FILE` conditions), or
  a dataset reference NAME[:split[:index]] (sample i <-> dataset video index + i) with `data_dir`;
- else the run's own `obs` / `data_dir` from plan.json.
A dataset without `data_dir` is looked up as the run's conditioning looked it up
(`conditioning.open_conditioning_data`: a procedural one with no folder is generated again).
Truth frames come through the dataset's `clip` at the samples' size and channels, then to uint8,
exactly as the conditioning frames did. Revisit consistency needs a pose in the dataset's saved
state (`pose`, e.g. revisit-world; else `coords`); without one it is reported as null.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from fdm_engine.errors import FdmError
from fdm_engine.evaluation.video_metrics import frame_metrics, revisit_summary, revisit_values, summarise

POSE_KEYS = ("pose", "coords")
_NAME = re.compile(r"video_(\d{4,})\.(npz|mp4|gif)$")


def read_samples(samples_dir: Path) -> tuple[list[int], np.ndarray]:
    """-> (video ids, frames uint8 [V, T, H, W, C]); npz preferred over mp4/gif for each id."""
    from fdm_engine.video_io import read_video

    found: dict[int, Path] = {}
    for path in sorted(Path(samples_dir).glob("video_*")):
        m = _NAME.match(path.name)
        if m and (int(m[1]) not in found or m[2] == "npz"):
            found[int(m[1])] = path
    if not found:
        raise FdmError(f"{samples_dir}: no video_NNNN.npz (or .mp4/.gif) samples; write them with `fdm sample`")
    ids = sorted(found)
    videos = [_read_one(found[i], read_video) for i in ids]
    shapes = {v.shape for v in videos}
    if len(shapes) != 1:
        raise FdmError(f"{samples_dir}: samples differ in shape ({sorted(shapes)})")
    return ids, np.stack(videos)


def _read_one(path: Path, read_video) -> np.ndarray:
    from fdm_engine.video_io import read_npz_frames

    return read_npz_frames(path) if path.suffix == ".npz" else read_video(path)


NO_DATA = ("unconditional", "oracle prior")


def read_run_config(samples_dir: Path) -> dict:
    path = Path(samples_dir) / "plan.json"
    if not path.is_file():
        return {}
    try:
        plan = json.loads(path.read_text())
        config = dict(plan.get("config", {}))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
        raise FdmError(f"{path}: not a plan.json written by `fdm sample` ({e})") from e
    # Where the given frames came from, also when --obs was not given (a checkpoint's own dataset,
    # e.g. "carla_no_traffic:test"); "unconditional" and "oracle prior" name no data.
    source = plan.get("conditioning")
    if config.get("obs") is None and isinstance(source, str) and source not in NO_DATA:
        config["obs"] = source
    return config


def load_truth(ids: list[int], shape: tuple, data: str | None, data_dir: str | None,
               run: dict) -> tuple[str, np.ndarray, list[np.ndarray | None]]:
    """-> (source, truth uint8 [V, T', H, W, C], pose [T', k] or None per video). shape = (T, H, W, C)."""
    from fdm_engine.conditioning import VIDEO_SUFFIXES
    from fdm_engine.video_io import read_video

    spec = data or run.get("obs")
    data_dir = data_dir or (None if data else run.get("data_dir"))
    if spec is None:
        model = str(run.get("model", ""))
        why = "the oracle has no ground truth beyond the given frames" if model.startswith("oracle:") else \
            "plan.json names no conditioning data"
        raise FdmError(f"no ground truth for these samples ({why}): pass --data NAME[:split[:index]] or a video file")
    T, H, W, C = shape
    if Path(spec).suffix.lower() in VIDEO_SUFFIXES:
        frames = _resize(read_video(spec), H, C)
        return spec, np.stack([frames[:T]] * len(ids)), [None] * len(ids)
    from fdm_engine.conditioning import open_conditioning_data
    from fdm_engine.datasets import parse_dataset_ref

    ref = parse_dataset_ref(spec)  # found (or generated) as the run's conditioning found it
    ds = open_conditioning_data(ref.name, ref.split, data_dir, _checkpoint_extra(run.get("model")),
                                image_size=H, channels=C, length=T)
    if ref.index + max(ids) >= len(ds):
        raise FdmError(f"--data {spec}: split has {len(ds)} videos, sample {max(ids)} needs video "
                       f"{ref.index + max(ids)}")
    from fdm_engine.video_io import to_uint8

    truth, poses = [], []
    for i in ids:
        n = min(T, ds.num_frames(ref.index + i))
        truth.append(to_uint8(ds.clip(ref.index + i, length=n, start=0)))
        state = ds.state(ref.index + i)
        poses.append(next((state[k][:n] for k in POSE_KEYS if k in state), None))
    n = min(len(t) for t in truth)
    return spec, np.stack([t[:n] for t in truth]), [None if p is None else p[:n] for p in poses]


def _checkpoint_extra(model) -> dict | None:
    """The metadata of the run's checkpoint ({} for the oracle; None when the file cannot be read
    here: then videos generated on the fly are refused, as they could be other than the run's)."""
    from fdm_engine.checkpoint import read_extra
    from fdm_engine.denoisers import is_oracle

    if not model or is_oracle(model):
        return {}
    try:
        return read_extra(model)
    except FdmError:
        return None


def _resize(frames: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A truth video file [T, H', W', C'] -> [T, size, size, channels] as the conditioning saw it."""
    import torch

    from fdm_engine.video_io import from_uint8, to_uint8

    x = from_uint8(frames)  # [T, C', H', W']
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True).clamp(-1, 1)
    return to_uint8(x)


def evaluate_samples(samples_dir, data: str | None = None, data_dir: str | None = None,
                     n_obs: int | None = None, tol: float = 0.5) -> dict:
    """PSNR/SSIM per frame index (mean over videos) and summaries over generated frames, plus
    revisit consistency where the truth has poses. Frames beyond the truth's length are skipped."""
    samples_dir = Path(samples_dir)
    if n_obs is not None and n_obs < 0:
        raise FdmError(f"--n-obs must be >= 0 (got {n_obs})")
    run = read_run_config(samples_dir)
    ids, samples = read_samples(samples_dir)
    source, truth, poses = load_truth(ids, samples.shape[1:], data, data_dir, run)
    if truth.shape[2:] != samples.shape[2:]:
        raise FdmError(f"truth frames are {list(truth.shape[2:])} but samples are {list(samples.shape[2:])}")
    n_obs = run.get("n_obs", 0) if n_obs is None else n_obs
    T = min(samples.shape[1], truth.shape[1])
    if n_obs >= T:
        raise FdmError(f"n_obs {n_obs} leaves no generated frames to score (videos have {T} frames)")
    samples, truth = samples[:, :T], truth[:, :T]
    report = {"samples_dir": str(samples_dir), "truth": source, "videos": len(ids), "length": T, "n_obs": n_obs}
    for name, values in frame_metrics(samples, truth).items():
        report[name] = summarise(values, n_obs)
    per_video = [revisit_values(s, t, p, n_obs, tol) for s, t, p in zip(samples, truth, poses) if p is not None]
    report["revisit"] = revisit_summary(per_video)
    return report
