"""`fdm convert SRC DST`: turn a checkpoint into the other format (.pt <-> .safetensors)."""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert(src: str, dst: str) -> None:
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
    Examples:
      fdm convert run/ckpt.pt run/ckpt.safetensors
      fdm convert model.safetensors model.pt
    """
    # Imported here so `fdm --help` does not pay for torch.
    from fdm_engine.checkpoint import convert_checkpoint

    info = convert_checkpoint(src, dst)
    size_mb = info.path.stat().st_size / 1e6
    ema = " + EMA" if info.has_ema else ""
    click.echo(f"wrote {info.path} ({size_mb:.1f} MB): model {info.model_name!r}, "
               f"{info.num_weights} tensors{ema}, from {src}")
