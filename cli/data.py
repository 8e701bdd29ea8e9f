"""`fdm data`: list datasets, make procedural ones, summarise and validate any."""

from __future__ import annotations

import dataclasses
import json
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import click

from cli.paths import OutputPath
from fdm_engine.errors import FdmError

PUBLISHED = {
    "carla_no_traffic": "CARLA Town01 driving: video_{i}.pt + coords_{i}.npy + video_{train,test}.csv",
    "minerl": "MineRL Navigate: {train,test}/{n}.npy, uint8 500 x 64 x 64 x 3",
    "mazes_cwvae": "GQN mazes: {train,test}/{n}.npy, uint8 300 x 64 x 64 x 3",
    "folder": ".mp4/.avi/.gif files, recursive; UCF-101 split lists or train/ test/ folders",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data():
    """Datasets: list them, make procedural ones, summarise and validate any.

    \b
    Every dataset is read by name (`--dataset NAME`) from --data-dir DIR, else
    $FDM_DATA_DIR/NAME, else datasets/NAME under the working directory.
    """


@data.command("list")
def list_cmd():
    """List the dataset names and what each one reads."""
    from fdm_engine.datasets import DATASETS, GENERATORS

    for name in DATASETS.names():
        if name in GENERATORS:
            text = f"procedural (fdm data make): {GENERATORS.get(name).description}"
        else:
            text = PUBLISHED.get(name, "(plug-in)")
        click.echo(f"{name:<18} {text}")


@data.command("make")
@click.argument("name")
@click.option("--out", required=True, type=OutputPath(folder=True), help="New (or empty) folder to write.")
@click.option("--num-videos", type=int, default=100, show_default=True, help="Training videos.")
@click.option("--num-test", type=int, default=None, help="Test videos [default: max(1, num-videos // 10)].")
@click.option("--length", type=int, default=300, show_default=True, help="Frames per video.")
@click.option("--size", type=int, default=64, show_default=True, help="Frame side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same videos.")
@click.option("--format", "layout", type=click.Choice(["npy", "carla", "mp4"]), default="npy", show_default=True,
              help="npy: {split}/{n}.npy (exact); carla: video_{i}.pt + CSVs; mp4: {split}/{n}.mp4 (lossy).")
@click.option("--fps", type=float, default=10, show_default=True, help="Frame rate of mp4 files.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A generator setting, repeatable (e.g. num_balls=5); see the generator's config.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def make(name, out, num_videos, num_test, length, size, seed, layout, fps, params, quiet):
    """Generate procedural dataset NAME into --out, with ground-truth state beside each video.

    \b
    Generators:
      bouncing-balls   coloured balls, elastic walls; state: centres, radii per frame
      moving-digits    two digits bouncing (Moving-MNIST-like); state: positions per frame
      revisit-world    a camera looping over a fixed random map, revisiting places;
                       state: camera pose per frame, loop period, the map

    \b
    Example:
      fdm data make bouncing-balls --out data/balls --num-videos 200 --length 100 --size 32
      fdm train --dataset bouncing-balls --data-dir data/balls ...
    """
    from fdm_engine.datasets import make_dataset

    try:
        with _sigterm_interrupts():  # `timeout`, `kill`: cleaned up as Ctrl-C is
            made = make_dataset(name, out, num_videos, length, size, seed=seed, format=layout,
                                num_test=num_test, params=_parse_params(params), fps=fps, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"{'' if quiet else chr(10)}interrupted: {out} not written (the videos made so far were removed); "
                   "run the command again to make it", err=True)
        raise
    manifest = json.loads((made / "dataset.json").read_text())
    splits = manifest["splits"]
    click.echo(f"wrote {made}: {splits['train']} train + {splits['test']} test videos of {name}, "
               f"{length} frames of {size}x{size}x{manifest['channels']} ({layout} layout); "
               f"read with --dataset {name} --data-dir {made}")


@data.command("info")
@click.argument("directory", required=False, type=click.Path())
@click.option("--dataset", "name", default=None, help="Dataset name [default: recognised from the folder].")
@click.option("--split", "splits", multiple=True, help="Split to check, repeatable [default: every split found].")
@click.option("--skip-bad", is_flag=True, help="Warn about bad files and go on, instead of stopping at the first.")
@click.option("--headers-only", is_flag=True, help="Read file headers only; do not decode every video.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def info(directory, name, splits, skip_bad, headers_only, as_json, quiet):
    """Summarise and validate the dataset in DIRECTORY: videos per split, length, size, layout.

    Every file is opened and decoded (unless --headers-only); the first bad one stops with an
    error naming it, or with --skip-bad each bad file is a warning. Without DIRECTORY, --dataset
    NAME is looked for as `fdm train` would ($FDM_DATA_DIR/NAME, else datasets/NAME).

    \b
    Examples:
      fdm data info data/balls
      fdm data info --dataset minerl --split test
    """
    from fdm_engine.datasets import DATASETS, detect_dataset, read_manifest, resolve_data_dir, split_names, validate

    if directory is None and name is None:
        raise FdmError("give a DIRECTORY or --dataset NAME")
    if directory is not None and not Path(directory).is_dir():
        raise FdmError(f"{directory}: no such folder")
    root = resolve_data_dir(name, directory) if directory is None else Path(directory)
    name = name or detect_dataset(root)
    factory = DATASETS.get(name)
    summary = {"root": str(root), "dataset": name, "manifest": read_manifest(root), "splits": {}}
    with _warnings_as_lines():
        for split in splits or split_names(name, root):
            ds = factory(root, split, name=name, skip_bad=skip_bad)
            row = dataclasses.asdict(ds.info())
            if not headers_only:
                report = validate(ds, progress=not quiet)
                row.update(num_videos=len(ds), min_length=report.min_length, max_length=report.max_length,
                           bad=report.bad, checked=report.checked)
            summary["splits"][split] = row
    click.echo(json.dumps(summary, indent=2) if as_json else _describe(summary, headers_only))


def _describe(summary: dict, headers_only: bool) -> str:
    rows = list(summary["splits"].values())
    m = summary["manifest"]
    layout = rows[0]["format"]
    if m and m.get("format", layout) != layout:  # `data make --format mp4` writes a video folder
        layout = f"{m['format']} layout, read as a video {layout}"
    else:
        layout = f"{layout} layout"
    lines = [f"{summary['root']}: {summary['dataset']} ({layout})"]
    if m:
        lines.append(f"  made by fdm data make: seed {m.get('seed')}, config {json.dumps(m.get('config', {}))}")
    for split, r in summary["splits"].items():
        length = f"{r['min_length']}" if r["min_length"] == r["max_length"] else f"{r['min_length']}-{r['max_length']}"
        bad = f", {len(r['bad'])} bad (skipped)" if r.get("bad") else ""
        videos = f"{r['num_videos']} video" + ("s" if r["num_videos"] != 1 else "")
        lines.append(f"  {split}: {videos}{bad}, {length} frames, "
                     f"{r['height']}x{r['width']}x{r['channels']}")
    checked = sum(r.get("checked", 0) for r in rows)
    bad = sum(len(r.get("bad", [])) for r in rows)
    lines.append("  headers read; videos not decoded (drop --headers-only to validate)" if headers_only
                 else f"  validated: {checked} videos decoded, {bad} bad")
    return "\n".join(lines)


def _parse_params(params: tuple[str, ...]) -> dict:
    """("num_balls=5", "max_speed=0.1") -> {"num_balls": 5, "max_speed": 0.1} (JSON values, else strings)."""
    out = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise FdmError(f"--param {p!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt inside the block (restored after)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _warnings_as_lines():
    """Print each BadVideoWarning as one `warning: ...` line on stderr."""
    from fdm_engine.datasets import BadVideoWarning

    def show(message, category, *args, **kwargs):
        click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always", BadVideoWarning)
        warnings.showwarning = show
        yield
