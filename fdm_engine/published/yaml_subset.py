"""The part of YAML that video_diffusion's configs use, read without a YAML dependency.

Block mappings and block lists by indentation (`key: value`, `key:` + an indented block,
`- item` / `- key: value` + the item's further keys), `# comments`, flow lists `[1, 2]` and
`{}` / `[]`, and scalars: integers, floats (1e-4), true/false (any case), null / ~, quoted or
plain strings. Anything else (anchors, multi-line strings, flow mappings with content, tabs) is
an FdmError naming the file and line, never a guess.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fdm_engine.errors import FdmError

_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FdmError(f"--config {path}: cannot read it ({e})") from None
    return parse_yaml(text, f"--config {path}")


def parse_yaml(text: str, where: str) -> Any:
    lines = []  # (line number, indent, content)
    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise FdmError(f"{where}: line {n}: tab indentation is not supported")
        body = _strip_comment(raw).rstrip()
        if body.strip() and body.strip() != "---":
            lines.append((n, len(body) - len(body.lstrip()), body.strip()))
    if not lines:
        return {}
    value, i = _block(lines, 0, lines[0][1], where)
    if i < len(lines):
        raise FdmError(f"{where}: line {lines[i][0]}: unexpected indentation")
    return value


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _block(lines, i: int, indent: int, where: str):
    if lines[i][2].startswith("- ") or lines[i][2] == "-":
        return _list(lines, i, indent, where)
    return _mapping(lines, i, indent, where)


def _list(lines, i: int, indent: int, where: str):
    out = []
    while i < len(lines) and lines[i][1] == indent and (lines[i][2].startswith("- ") or lines[i][2] == "-"):
        n, _, content = lines[i]
        rest = content[1:].strip()
        if not rest:  # "-" then an indented block
            if i + 1 >= len(lines) or lines[i + 1][1] <= indent:
                out.append(None)
                i += 1
                continue
            value, i = _block(lines, i + 1, lines[i + 1][1], where)
            out.append(value)
        elif _is_key(rest):  # "- key: ..." : a mapping whose keys sit after the dash
            sub = indent + (len(content) - len(rest))
            value, i = _mapping([*lines[:i], (n, sub, rest), *lines[i + 1:]], i, sub, where)
            out.append(value)
        else:
            out.append(_scalar(rest, n, where))
            i += 1
    return out, i


def _is_key(text: str) -> bool:
    return re.match(r"^[^'\"\[{][^:]*:(\s|$)", text) is not None or re.match(r"^(['\"]).*\1:(\s|$)", text) is not None


def _mapping(lines, i: int, indent: int, where: str):
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i][1] == indent:
        n, _, content = lines[i]
        if not _is_key(content):
            raise FdmError(f"{where}: line {n}: expected 'key: value', got {content!r}")
        key, _, rest = content.partition(":")
        key = key.strip().strip("'\"")
        rest = rest.strip()
        if key in out:
            raise FdmError(f"{where}: line {n}: key {key!r} appears twice")
        if rest:
            out[key] = _scalar(rest, n, where)
            i += 1
        elif i + 1 < len(lines) and (lines[i + 1][1] > indent or
                                     (lines[i + 1][1] == indent and lines[i + 1][2].startswith("- "))):
            out[key], i = _block(lines, i + 1, lines[i + 1][1], where)
        else:
            out[key] = None
            i += 1
    if i < len(lines) and lines[i][1] > indent:
        raise FdmError(f"{where}: line {lines[i][0]}: unexpected indentation")
    return out, i


def _scalar(text: str, n: int, where: str) -> Any:
    if not text:
        raise FdmError(f"{where}: line {n}: an empty item")
    if text[0] in "&*!|>":
        raise FdmError(f"{where}: line {n}: YAML feature {text[0]!r} is not supported")
    if text[0] in "'\"":
        if len(text) < 2 or text[-1] != text[0]:
            raise FdmError(f"{where}: line {n}: unterminated string {text!r}")
        return text[1:-1]
    if text[0] == "[":
        if text[-1] != "]":
            raise FdmError(f"{where}: line {n}: a flow list must close on its line ({text!r})")
        inner = text[1:-1].strip()
        parts = [part.strip() for part in inner.split(",")] if inner else []
        if parts and not parts[-1]:  # `[1, 2, ]`: YAML allows a trailing comma
            parts.pop()
        return [_scalar(part, n, where) for part in parts]
    if text[0] == "{":
        if text.replace(" ", "") != "{}":
            raise FdmError(f"{where}: line {n}: flow mappings other than {{}} are not supported")
        return {}
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text
