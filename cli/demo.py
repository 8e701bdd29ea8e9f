"""`fdm demo`: sample a long video from the shipped demo model; `fdm demo export` makes that model."""

from __future__ import annotations

import click

from cli.paths import OutputPath


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", default="demo_out", show_default=True, type=OutputPath(folder=True),
              help="Folder for the video, the side-by-side and the scheme picture.")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="A checkpoint exported by `fdm demo export` [default: the shipped demo-balls model].")
@click.option("--length", default=300, show_default=True, type=click.IntRange(min=2), help="Frames to make.")
@click.option("--n-obs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Frames of the held-out video given to the model.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1), help="Denoising steps per job.")
@click.option("--scheme", default="hierarchy-2", show_default=True, help="Sampling scheme (fdm schemes list).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Picks the held-out video and the sampling noise.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def demo(ctx, out, checkpoint, length, n_obs, steps, scheme, seed, quiet):
    """Sample a long video from the demo model, given the first frames of a held-out video.

    The demo model (fdm_engine/assets/demo-balls.safetensors) is a small FDM network that fdm
    trained on procedural bouncing balls (README, "The demo model"). The held-out video comes
    from the same generator with a seed stream that no training video used. Writes
    OUT/samples/video_0000.mp4 (the generated video), OUT/side_by_side.mp4 (real left, generated
    right), OUT/side_by_side.png (12 frames, real above generated, labelled) and OUT/scheme.png,
    then prints one line with the paths.

    \b
    Examples:
      fdm demo                                   # what `make demo` runs
      fdm demo --scheme autoreg --length 600 --out demo_autoreg
    """
    if ctx.invoked_subcommand is not None:
        return
    from fdm_engine.demo import DEMO_CHECKPOINT, run_demo

    done = run_demo(out, checkpoint or DEMO_CHECKPOINT, length=length, n_obs=n_obs, steps=steps,
                    scheme=scheme, seed=seed, progress=not quiet)
    p = done["paths"]
    click.echo(f"demo: {done['length']} frames ({done['n_obs']} given) by {done['scheme']}, {done['jobs']} jobs, "
               f"{done['nfe']} network evaluations, {done['wall_s']:.1f} s -> video {p['video']}, "
               f"side-by-side {p['side_by_side']} and {p['strip']}, scheme {p['scheme']}")


@demo.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--step", type=int, default=None, help="The checkpoint of this step [default: the newest].")
def export(run_dir, dst, step):
    """Write the EMA weights of RUN_DIR's newest checkpoint to DST, with the run's training config
    and its data generator's settings as metadata (how the shipped demo model was made)."""
    from trainers.export import export_checkpoint

    path = export_checkpoint(run_dir, dst, step)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
