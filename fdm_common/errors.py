"""The one error type users see: a one-line message naming the bad value; the CLI exits 2 on it."""


class FdmError(Exception):
    """A user mistake (bad flag, bad file, bad value). Message is one line, no traceback shown."""

    exit_code = 2


def short_list(items, limit: int = 10) -> str:
    """A list for a one-line message: at most `limit` items, then how many there are in all."""
    items = list(items)
    if len(items) <= limit:
        return str(items)
    return f"[{', '.join(map(str, items[:limit]))}, ...] ({len(items)} in all)"


def count(n: int, noun: str) -> str:
    """`n noun(s)` for a message, in words: '1 video', '2 videos', '0 rounds'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
