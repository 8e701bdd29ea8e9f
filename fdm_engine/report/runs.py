"""Reading the two kinds of folder a report shows, without converting anything yet.

A samples folder is what `fdm sample --out` writes: plan.json (config, jobs, NFE, rounds, wall
time) and video_NNNN.{mp4,gif,npz,png}; `fdm eval video` adds eval.json, and an FVD result saved
as fvd.json (`fdm eval fvd ... --json > DIR/fvd.json`) is shown too. A folder of video_NNNN files
without plan.json (a training run's samples/step_N/) is a samples folder with no stats.

A training run folder is what `fdm train` writes (trainers/loop.py): config.json, metrics.jsonl
(one record per log interval, fdm_engine/metrics_log.py), checkpoints/step_N.safetensors and the
periodic samples/step_N/video_NNNN.mp4.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from fdm_engine.errors import FdmError
from fdm_engine.metrics_log import MetricsLog
from fdm_engine.video_io import _one_line

VIDEO_FORMATS = ("mp4", "gif", "npz")  # in order of preference as the source of a page's video
_VIDEO = re.compile(r"^video_(\d{4,})\.(mp4|gif|npz)$")
_STEP = re.compile(r"^step_(\d+)$")
_CHECKPOINT = re.compile(r"^step_(\d+)\.safetensors$")


@dataclasses.dataclass
class VideoSource:
    """One video of a folder: the file to show, its id, and the npz beside it when there is one."""

    video_id: int
    path: Path
    npz: Path | None = None


@dataclasses.dataclass
class SampleRun:
    path: Path
    plan: dict  # plan.json, {} when absent
    videos: list[VideoSource]
    metrics: dict  # {"psnr": .., "ssim": .., "fvd": ..} from eval.json / fvd.json

    @property
    def config(self) -> dict:
        return self.plan.get("config", {})

    def stats(self) -> dict:
        """The plan's figures: jobs, NFE, rounds, wall time, generated frames per second."""
        p, c = self.plan, self.config
        if not p:
            return {}
        length, n_obs = c.get("length"), c.get("n_obs", 0)
        generated = (length - n_obs) * len(self.videos) if length else None
        wall = p.get("wall_s")
        return {"jobs": len(p.get("jobs", [])), "nfe": p.get("nfe"), "network_calls": p.get("network_calls"),
                "rounds": p.get("rounds"), "wall_s": wall,
                "frames_per_s": generated / wall if generated and wall else None}


@dataclasses.dataclass
class TrainingRun:
    path: Path
    config: dict
    records: list[dict]
    checkpoints: list[int]
    samples: dict[int, list[VideoSource]]  # step -> videos


def read_folder(path) -> SampleRun | TrainingRun:
    """Whichever kind `path` is; FdmError naming the folder or file when it is neither or broken."""
    path = Path(path)
    if not path.is_dir():
        raise FdmError(f"{path}: no such folder")
    if (path / "config.json").is_file() and ((path / "metrics.jsonl").exists() or (path / "checkpoints").is_dir()):
        return read_training_run(path)
    if (path / "plan.json").is_file() or any(_VIDEO.match(p.name) for p in path.iterdir()):
        return read_samples(path)
    raise FdmError(f"{path}: neither a samples folder (plan.json, video_NNNN.mp4 from `fdm sample`) nor a "
                   f"training run folder (config.json, metrics.jsonl from `fdm train`)")


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FdmError(f"{path}: not a valid {what} ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise FdmError(f"{path}: not a valid {what} (expected a JSON object)")
    return data


def read_samples(path: Path) -> SampleRun:
    plan = read_json(path / "plan.json", "plan.json from `fdm sample`") if (path / "plan.json").is_file() else {}
    if plan:
        config = plan.get("config")
        if not isinstance(config, dict) or not isinstance(plan.get("jobs", []), list):
            raise FdmError(f"{path / 'plan.json'}: not a valid plan.json from `fdm sample` (no config or jobs)")
        videos = _planned_videos(path, config)
    else:
        videos = _found_videos(path)
    return SampleRun(path, plan, videos, _eval_metrics(path))


def _planned_videos(path: Path, config: dict) -> list[VideoSource]:
    """The files plan.json says the run wrote; a missing one is named, not silently left out."""
    formats = [f for f in VIDEO_FORMATS if f in config.get("formats", ())]
    if not formats:
        raise FdmError(f"{path / 'plan.json'}: the run wrote no videos (formats "
                       f"{','.join(config.get('formats', ())) or 'none'}); sample again with --format mp4")
    n = config.get("num_videos", 1)
    npz = "npz" in formats
    return [VideoSource(i, path / f"video_{i:04d}.{formats[0]}", path / f"video_{i:04d}.npz" if npz else None)
            for i in range(int(n))]


def _found_videos(path: Path) -> list[VideoSource]:
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(path.iterdir()):
        m = _VIDEO.match(p.name)
        if m:
            found.setdefault(int(m[1]), {})[m[2]] = p
    return [VideoSource(i, next(files[f] for f in VIDEO_FORMATS if f in files), files.get("npz"))
            for i, files in sorted(found.items())]


def _eval_metrics(path: Path) -> dict:
    metrics = {}
    if (path / "eval.json").is_file():
        ev = read_json(path / "eval.json", "eval.json from `fdm eval video`")
        for key in ("psnr", "ssim"):
            value = ev.get(key, {}).get("mean") if isinstance(ev.get(key), dict) else None
            if value is not None:
                metrics[key] = float(value)
    if (path / "fvd.json").is_file():
        fvd = read_json(path / "fvd.json", "FVD result (`fdm eval fvd ... --json`)").get("fvd")
        if not isinstance(fvd, (int, float)):
            raise FdmError(f"{path / 'fvd.json'}: not a valid FVD result (`fdm eval fvd ... --json`): no 'fvd' number")
        metrics["fvd"] = float(fvd)
    return metrics


def read_training_run(path: Path) -> TrainingRun:
    config = read_json(path / "config.json", "config.json from `fdm train`")
    log = path / "metrics.jsonl"
    if not log.is_file():
        raise FdmError(f"{log}: missing (the run has saved no metrics yet)")
    records = [r for r in MetricsLog(log).read() if isinstance(r, dict) and isinstance(r.get("step"), int)]
    if not records and log.stat().st_size:
        raise FdmError(f"{log}: not a metrics log from `fdm train` (no record with a step)")
    checkpoints = sorted(int(m[1]) for p in (path / "checkpoints").glob("step_*.safetensors")
                         if (m := _CHECKPOINT.match(p.name))) if (path / "checkpoints").is_dir() else []
    samples: dict[int, list[VideoSource]] = {}
    if (path / "samples").is_dir():
        for d in sorted((path / "samples").iterdir()):
            if d.is_dir() and (m := _STEP.match(d.name)):
                videos = _found_videos(d)
                if videos:
                    samples[int(m[1])] = videos
    return TrainingRun(path, config, records, checkpoints, dict(sorted(samples.items())))
