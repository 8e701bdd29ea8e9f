"""Turn run folders into the files of a report: browser-ready videos, strips, plots, index.html.

Everything is written into a temporary folder beside --out and moved into place at the end, so a
failed report leaves the previous one (or nothing), never half a page. Paths in the page are
relative to index.html, so the folder can be copied or mailed and still opens from disk.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fdm_engine.errors import FdmError
from fdm_engine.report import media
from fdm_engine.report.runs import SampleRun, TrainingRun, VideoSource, read_folder

GENERATOR = "fdm report"  # <meta name="generator">: marks a folder we may replace
DEFAULT_FPS = 10  # the writer's default, for npz/gif sources of a folder without plan.json


@dataclasses.dataclass
class Clip:
    """One <video> of the page."""

    src: str  # relative to index.html
    frames: int
    fps: float
    width: int
    height: int
    n_obs: int = 0


@dataclasses.dataclass
class Cell:
    """One video of a run: generated, the real one beside it where known, its given frames."""

    label: str
    generated: Clip | None = None
    real: Clip | None = None
    given_png: str | None = None
    error: str | None = None  # --skip-bad: why this video is not shown


@dataclasses.dataclass
class SampleSection:
    name: str
    run: SampleRun
    cells: list[Cell]
    scheme_png: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainingSection:
    name: str
    run: TrainingRun
    plot_png: str | None
    samples: dict[int, list[Cell]]
    notes: list[str] = dataclasses.field(default_factory=list)


def write_report(dirs, out, skip_bad: bool = False, progress: bool = True, warn=print) -> Path:
    """Write OUT/index.html and its assets for the run folders `dirs`; returns the index path."""
    from tqdm import tqdm

    from fdm_engine.report.page import render_page, write_assets

    out = Path(out)
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise FdmError("name at least one folder to report on")
    _check_out(out, dirs)
    runs = [read_folder(d) for d in dirs]  # every folder is checked before any video is converted
    names = [f"{k + 1:02d}-{_slug(d)}" for k, d in enumerate(dirs)]
    total = sum(len(r.videos) if isinstance(r, SampleRun) else sum(map(len, r.samples.values())) for r in runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
    try:
        with tqdm(total=total, unit="video", desc="report", disable=not progress) as bar:
            conv = _Converter(tmp, skip_bad, warn, bar)
            sections = [conv.samples(run, name) if isinstance(run, SampleRun) else conv.training(run, name)
                        for run, name in zip(runs, names)]
        write_assets(tmp / "assets")
        (tmp / "index.html").write_text(render_page(sections, GENERATOR), encoding="utf-8")
        _replace(out, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


def _check_out(out: Path, dirs: list[Path]) -> None:
    target = out.resolve()
    for d in dirs:
        src = d.resolve()
        if src == target or target in src.parents:
            raise FdmError(f"--out {out}: would replace the folder {d} it reports on; choose another --out")
    if out.exists() and not out.is_dir():
        raise FdmError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_report(out):
        raise FdmError(f"--out {out}: folder exists and is not an fdm report; choose another --out")


def _is_report(folder: Path) -> bool:
    index = folder / "index.html"
    try:
        return index.is_file() and f'<meta name="generator" content="{GENERATOR}">' in index.read_text()[:2000]
    except (OSError, UnicodeDecodeError):
        return False


def _replace(out: Path, tmp: Path) -> None:
    if out.is_dir():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.resolve().name).strip("._") or "run"


class _Converter:
    """Writes one run's files under ROOT/runs/NAME/ and returns the section describing them."""

    def __init__(self, root: Path, skip_bad: bool, warn, bar):
        self.root, self.skip_bad, self.warn, self.bar = root, skip_bad, warn, bar

    def _guard(self, cell: Cell, fn, *args):
        """Run fn; with --skip-bad a broken video becomes a note on the page instead of exit 2."""
        try:
            return fn(*args)
        except FdmError as e:
            if not self.skip_bad:
                raise
            cell.error = str(e)
            self.warn(f"warning: {e} (skipped: --skip-bad)")
            return None

    # ----------------------------------------------------------------------------- samples

    def samples(self, run: SampleRun, name: str) -> SampleSection:
        folder = self.root / "runs" / name
        folder.mkdir(parents=True)
        cfg = run.config
        fps = cfg.get("fps", DEFAULT_FPS)
        n_obs = int(cfg.get("n_obs", 0))
        section = SampleSection(name, run, [])
        pixels: dict[int, np.ndarray] = {}
        for src in run.videos:
            cell = Cell(f"video {src.video_id}")
            section.cells.append(cell)
            clip = self._guard(cell, self._video, src, folder / f"video_{src.video_id:04d}.mp4", fps, n_obs)
            if clip is not None:
                cell.generated = clip
                if n_obs or cfg.get("obs"):
                    frames = self._guard(cell, _pixels, src, None if cfg.get("obs") else n_obs)
                    if frames is not None:
                        pixels[src.video_id] = frames
                        if n_obs:
                            cell.given_png = self._strip(folder / f"given_{src.video_id:04d}.png", frames[:n_obs])
            self.bar.update(1)
        if cfg.get("obs") and pixels:
            self._truth(section, folder, pixels, fps, n_obs)
        if run.plan.get("jobs"):
            section.scheme_png = self._scheme(run, folder / "scheme.png")
        return section

    def _video(self, src: VideoSource, dst: Path, fps: float, n_obs: int = 0) -> Clip:
        if not src.path.is_file():
            raise FdmError(f"{src.path}: missing")
        if src.path.suffix == ".mp4":
            info = media.browser_copy(src.path, dst)
        else:  # gif (our writer merges repeated frames; read_video restores them) or npz
            info = media.encode_frames(_pixels(src), fps, dst)
        return Clip(self._rel(dst), info.frames, info.fps, info.width, info.height, n_obs)

    def _strip(self, dst: Path, frames: np.ndarray) -> str:
        from fdm_engine.video_io import write_strip

        write_strip(dst, frames)
        return self._rel(dst)

    def _truth(self, section: SampleSection, folder: Path, pixels: dict[int, np.ndarray], fps, n_obs) -> None:
        """The real video beside each generated one, when the run's --obs can still be read here."""
        from fdm_engine.evaluation.video_eval import load_truth

        ids = sorted(pixels)
        try:
            source, truth, _ = load_truth(ids, pixels[ids[0]].shape, None, None, section.run.config)
        except FdmError as e:
            section.notes.append(f"real videos not shown: {e}")
            return
        for vid, frames in zip(ids, truth):
            dst = folder / f"real_{vid:04d}.mp4"
            info = media.encode_frames(frames, fps, dst)
            cell = next(c for c in section.cells if c.label == f"video {vid}")
            cell.real = Clip(self._rel(dst), info.frames, info.fps, info.width, info.height, n_obs)
        section.notes.append(f"real videos: {source}")

    def _scheme(self, run: SampleRun, dst: Path) -> str:
        from sampling_schemes.job import Job
        from sampling_schemes.plan import Plan
        from sampling_schemes.render import render_png

        cfg = run.config
        try:
            jobs = [Job.make(j["observed"], j["latent"], j.get("level", 0)) for j in run.plan["jobs"]]
        except (KeyError, TypeError, ValueError) as e:
            raise FdmError(f"{run.path / 'plan.json'}: jobs are not lists of frame indices ({e})") from e
        length = cfg.get("length") or 1 + max(f for j in jobs for f in j.frames)
        plan = Plan(length, cfg.get("n_obs", 0), jobs)
        render_png(plan, str(dst), title=f"{cfg.get('scheme', '?')}: {len(plan)} jobs, {plan.depth} rounds")
        return self._rel(dst)

    # ----------------------------------------------------------------------------- training

    def training(self, run: TrainingRun, name: str) -> TrainingSection:
        folder = self.root / "runs" / name
        folder.mkdir(parents=True)
        plot = _plot_training(run.records, folder / "training.png")
        samples: dict[int, list[Cell]] = {}
        for step, videos in run.samples.items():
            cells = samples[step] = []
            for src in videos:
                cell = Cell(f"video {src.video_id}")
                cells.append(cell)
                dst = folder / f"step_{step:07d}" / f"video_{src.video_id:04d}.mp4"
                dst.parent.mkdir(exist_ok=True)
                cell.generated = self._guard(cell, self._video, src, dst, DEFAULT_FPS)
                self.bar.update(1)
        notes = [] if run.records else ["metrics.jsonl holds no records yet"]
        return TrainingSection(name, run, plot and self._rel(plot), samples, notes)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _pixels(src: VideoSource, max_frames: int | None = None) -> np.ndarray:
    """uint8 [T, H, W, C] of a video: from its npz when there is one (exact), else decoded."""
    from fdm_engine.evaluation.video_eval import _read_one
    from fdm_engine.video_io import read_video

    if src.npz is not None and src.npz.is_file():
        frames = _read_one(src.npz, read_video)
    elif src.path.suffix == ".npz":
        raise FdmError(f"{src.path}: missing")
    else:
        frames = read_video(src.path, max_frames=max_frames)
    return frames[:max_frames] if max_frames else frames


def _plot_training(records: list[dict], path: Path) -> Path | None:
    """Loss (log scale, with a running mean), learning rate and steps/s against step, as one PNG."""
    import math

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in records if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(12, 3.4))
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_speed = fig.subplots(1, 3)
    losses = [r["loss"] for r in rows]
    window = max(1, len(losses) // 50)
    mean = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax_loss.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
    ax_loss.plot(steps[window - 1:], mean, lw=1.5, label=f"running mean ({window})")
    if min(losses) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss")
    ax_loss.legend(fontsize=8)
    for ax, key, label in ((ax_lr, "lr", "learning rate"), (ax_speed, "steps_per_s", "steps / s")):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), lw=1.2, marker="." if len(pts) < 50 else None)
        ax.set(xlabel="step", ylabel=label)
    for ax in (ax_loss, ax_lr, ax_speed):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
