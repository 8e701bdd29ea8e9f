"""`fdm report`: a web page of sampling and training runs, opened from disk."""

from __future__ import annotations

import click

from cli.paths import OutputPath


@click.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=OutputPath(folder=True), default="report", show_default=True,
              help="Folder for index.html and its assets (replaced if it holds an earlier report).")
@click.option("--skip-bad", is_flag=True,
              help="Show a broken or missing video as a note on the page instead of stopping (exit 2).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(dirs, out, skip_bad, quiet):
    """Write a static page (OUT/index.html) for one or more DIRS: samples folders of `fdm sample`
    (videos, given and real frames, the scheme picture, NFE, rounds, wall time) and training run
    folders of `fdm train` (loss, learning rate, steps/s, the periodic samples).

    \b
    Several folders get a comparison table (scheme, NFE, wall time, and PSNR/SSIM/FVD where
    `fdm eval video` wrote eval.json or DIR/fvd.json holds `fdm eval fvd --json`) and a grid of
    their videos. Every video plays, pauses and seeks together. The page uses relative paths only:
    copy the folder anywhere and open index.html in a browser.

    \b
    Example: fdm report samples/hierarchy-2 samples/autoreg --out report
    """
    from fdm_engine.report import write_report

    index = write_report(dirs, out, skip_bad=skip_bad, progress=not quiet, warn=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {index} (open it in a browser)")
