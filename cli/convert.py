"""`fdm convert SRC DST`: turn a checkpoint into the other format (.pt <-> .safetensors), or a
checkpoint written by a published codebase (`--from`) into ours."""

from __future__ import annotations

from pathlib import Path

import click

from cli.paths import OutputPath


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=OutputPath())
@click.option("--from", "from_", default=None, metavar="NAME",
              help="SRC was written by a published codebase: fdm, ramvid, ssm, video-diffusion. "
                   "[default: fdm's own formats, or the published format the file shows]")
@click.option("--flags", default=None, metavar='"..."',
              help="The published training script's arguments the model was trained with (ramvid, ssm).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False), metavar="FILE.yaml",
              help="The YAML config the model was trained with (video-diffusion).")
def convert(src: str, dst: str, from_: str | None, flags: str | None, config_file: str | None) -> None:
    """Copy checkpoint SRC to DST, each in the format its suffix names.

    \b
    Formats:
      .safetensors  native: weights plus model and diffusion config as JSON metadata
      .pt           read with torch.load(weights_only=True): tensors and plain values only,
                    so a file whose pickle would run code is refused, never executed

    Every tensor (weights and EMA weights) is copied bit-exact. SRC is checked the way
    `fdm sample` loads it (its model rebuilt from the metadata, keys and shapes compared),
    so a file that would not load is never written. DST is written atomically: an
    existing file there is replaced only once the new one is complete.

    \b
    Published checkpoints (see "Bring your checkpoint" in the README) become our model with
    the same weights, the diffusion settings they were trained with, and the published calling
    conventions recorded in the metadata (and honoured when sampling). A published FDM file
    (model*.pt, ema_*.pt) is recognised without --from.

    \b
    Examples:
      fdm convert run/ckpt.pt run/ckpt.safetensors
      fdm convert model.safetensors model.pt
      fdm convert ema_0.9999_550000.pt carla.safetensors
      fdm convert model.pt ramvid.safetensors --from ramvid --flags "--image_size 64 --num_channels 128"
    """
    # Imported here so `fdm --help` does not pay for torch.
    from fdm_engine.checkpoint import check_suffix, convert_checkpoint
    from fdm_engine.published import convert_published, detect_format

    check_suffix(dst)  # a bad DST suffix is reported before any reading
    if from_ is None and (flags is not None or config_file is not None):
        from fdm_engine.errors import FdmError

        raise FdmError(f"{src}: --flags and --config describe a published checkpoint: pass --from NAME too")
    name = from_ or detect_format(src)
    if name is not None:
        loaded = convert_published(src, dst, name, flags, config_file,
                                   notify=lambda line: click.echo(line, err=True))
        size_mb = Path(dst).stat().st_size / 1e6
        n = len(loaded.model.state_dict())
        click.echo(f"wrote {dst} ({size_mb:.1f} MB): model {loaded.model_name!r}, {n} tensors, "
                   f"from the published {name} checkpoint {src}")
        return
    info = convert_checkpoint(src, dst)
    size_mb = info.path.stat().st_size / 1e6
    ema = " + EMA" if info.has_ema else ""
    click.echo(f"wrote {info.path} ({size_mb:.1f} MB): model {info.model_name!r}, "
               f"{info.num_weights} tensors{ema}, from {src}")
