"""Output-path options checked as they are parsed: one line naming the flag, before any work."""

from __future__ import annotations

from pathlib import Path

import click

from fdm_engine.errors import FdmError
from fdm_engine.files import check_output_path


class OutputPath(click.ParamType):
    """A file or folder the command will write (see fdm_engine.files.check_output_path);
    `suffixes` restricts a file's type, e.g. (".png",) for pictures."""

    name = "path"

    def __init__(self, folder: bool = False, suffixes: tuple[str, ...] = ()):
        self.folder = folder
        self.suffixes = suffixes

    def convert(self, value, param, ctx):
        flag = (param.opts[0] if param.opts and param.opts[0].startswith("-") else param.human_readable_name) \
            if param else "path"
        if self.suffixes and Path(value).suffix.lower() not in self.suffixes:
            raise FdmError(f"{flag} {value}: give a name ending in {' or '.join(self.suffixes)}")
        return str(check_output_path(value, flag, folder=self.folder))
