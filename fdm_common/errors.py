"""The one error type users see: a one-line message naming the bad value; the CLI exits 2 on it."""


class FdmError(Exception):
    """A user mistake (bad flag, bad file, bad value). Message is one line, no traceback shown."""

    exit_code = 2
