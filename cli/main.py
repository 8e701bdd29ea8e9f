"""`fdm`: the command group. Each sub-command lives in its own module under cli/."""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import click

from fdm_engine.cpu_memory import retain_freed_memory
from fdm_engine.errors import FdmError

# name -> "module:attribute"; imported only when the command runs, so `fdm --help` stays fast.
COMMANDS = {
    "sample": "cli.sample:sample",
    "schemes": "cli.schemes:schemes",
    "convert": "cli.convert:convert",
    "data": "cli.data:data",
    "train": "cli.train:train",
    "eval": "cli.eval:eval_",
    "report": "cli.report:report",
    "demo": "cli.demo:demo",
}


def _version() -> str:
    try:
        return version("fdm")
    except PackageNotFoundError:
        return "0+unknown"


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="fdm")
def cli():
    """fdm: long-video diffusion.

    A model that sees only K frames at once generates videos of hundreds or thousands of frames
    by running many denoising jobs over frame subsets, planned by a sampling scheme.
    """


# click >= 8.2 raises this for a group given no command (8.1 prints the help itself, as we do)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv=None):
    """Console entry point: user mistakes (FdmError) print one line and exit 2."""
    retain_freed_memory()  # one sampling/training process: reuse freed activations (fdm_engine.cpu_memory)
    try:
        cli.main(args=argv, prog_name="fdm", standalone_mode=False)
    except FdmError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except _NO_ARGS_IS_HELP as e:
        # `fdm` or `fdm schemes` alone asks what there is: the help as --help prints it (stdout, exit 0),
        # not a usage error
        click.echo(e.ctx.get_help(), color=e.ctx.color)
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line too, not click's usage block
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        click.echo(f"error: {e.format_message()}{hint}".replace("\n", " "), err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
