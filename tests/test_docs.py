"""README.md and docs/ against the code: every `fdm ...` command line the README shows names commands
and flags that exist in the click parser, every command and sub-command is shown, every entry-point
group a registry reads is listed, and the docs/ files the code cites exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CTX = click.Context(cli)


def readme_commands(text: str = README) -> list[list[str]]:
    """The argument lists of the README's `fdm` invocations: indented code lines starting with
    `fdm` or `.venv/bin/fdm` (comments dropped), and inline `fdm ...` code spans."""
    lines = [line.strip() for line in text.splitlines() if line.startswith("    ")]
    spans = re.findall(r"`(fdm [^`]+)`", text)
    out = []
    for line in [ln for ln in lines if re.match(r"(\.venv/bin/)?fdm( |$)", ln)] + spans:
        words = shlex.split(line, comments=True)
        out.append(words[1:])
    return out


def resolve(words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """(command, path of names, the words after them) for `fdm WORDS...`; KeyError if a name is unknown."""
    command, path = cli, []
    words = list(words)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.get_command(CTX, name)
        if sub is None:
            raise KeyError(f"fdm {' '.join(path + [name])}: no such command")
        command, path = sub, path + [name]
    return command, path, words


def options_of(command: click.Command) -> dict[str, bool]:
    """Option name -> whether it takes a value."""
    names = {"--help": False, "-h": False}
    for param in command.params:
        if isinstance(param, click.Option):
            takes_value = not (param.is_flag or param.count)
            names.update({o: takes_value for o in param.opts + param.secondary_opts})
    return names


def is_placeholder(words: list[str]) -> bool:
    return bool(words) and re.fullmatch(r"[A-Z_]+|<[^>]+>", words[0]) is not None  # `fdm COMMAND --help`


def problems(words: list[str]) -> list[str]:
    if is_placeholder(words):
        return []
    try:
        command, path, rest = resolve(words)
    except KeyError as e:
        return [str(e.args[0])]
    known, out = options_of(command), []
    rest = iter(rest)
    for word in rest:
        if not word.startswith("-") or re.fullmatch(r"-\d.*", word):
            continue  # an argument (or a negative number)
        flag, eq, _ = word.partition("=")
        if flag not in known:
            out.append(f"fdm {' '.join(path)}: no option {flag}")
        elif known[flag] and not eq:
            next(rest, None)  # the option's value, which may itself start with "--"
    return out


def test_readme_commands_and_flags_exist():
    found = readme_commands()
    assert len(found) >= 20, "the README's command lines were not found"
    bad = [p for words in found for p in problems(words)]
    assert not bad, "; ".join(bad)


def every_command(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name in group.list_commands(CTX):
        sub = group.get_command(CTX, name)
        out.append(path + (name,))
        if isinstance(sub, click.Group):
            out.extend(every_command(sub, path + (name,)))
    return out


def test_readme_shows_every_command():
    shown = {tuple(resolve(words)[1]) for words in readme_commands() if not is_placeholder(words) and not problems(words)}
    missing = [" ".join(c) for c in every_command() if c not in shown and not any(s[: len(c)] == c for s in shown)]
    assert not missing, f"README shows no `fdm` line for: {', '.join(missing)}"


def entry_point_groups() -> set[str]:
    """Every entry-point group named by a Registry(...) in the packages' source."""
    groups = set()
    for package in ("fdm_common", "fdm_engine", "sampling_schemes", "kernels", "trainers", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            for call in re.findall(r"Registry\((.*?)\)\n", path.read_text(), flags=re.S):
                groups.update(re.findall(r"[\"'](fdm\.[a-z_]+)[\"']", call))
    return groups


def test_readme_lists_every_entry_point_group():
    groups = entry_point_groups()
    assert {"fdm.models", "fdm.covariances", "fdm.kernels"} <= groups
    missing = sorted(g for g in groups if f"`{g}`" not in README)
    assert not missing, f"README does not list the entry-point groups {', '.join(missing)}"


@pytest.mark.parametrize("line, complaint", [
    ("fdm sample x --no-such-flag 1", "no option --no-such-flag"),
    ("fdm schemes nope", "no such command"),
    ("fdm eval fvd a b --frames=3 --bogus=2", "no option --bogus"),
])
def test_the_checker_catches_mistakes(line, complaint):
    (words,) = readme_commands("    " + line + "\n")
    assert any(complaint in p for p in problems(words))


def cited_docs() -> dict[str, list[str]]:
    """docs/NAME.md cited in the packages, tests and README -> the files citing it."""
    cited: dict[str, list[str]] = {}
    files = [ROOT / "README.md"] + [p for d in ("fdm_common", "fdm_engine", "sampling_schemes", "kernels",
                                                "trainers", "cli", "tests", "benchmarks", "docs")
                                    for p in (ROOT / d).rglob("*.*") if p.suffix in (".py", ".md")]
    for path in files:
        for name in re.findall(r"docs/([a-z_-]+\.md)", path.read_text()):
            cited.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return cited


def test_the_code_cites_design_notes_that_exist():
    cited = cited_docs()
    assert {"denoiser.md", "schemes.md", "oracle.md", "training.md", "architectures.md"} <= set(cited)
    missing = {name: files[:3] for name, files in cited.items() if not (ROOT / "docs" / name).is_file()}
    assert not missing, f"cited but absent: {missing}"
    this = Path(__file__).name
    spec = [str(p.relative_to(ROOT)) for d in ("fdm_common", "fdm_engine", "sampling_schemes", "kernels", "trainers",
                                               "cli", "tests") for p in (ROOT / d).rglob("*.py")
            if p.name != this and re.search(r"SPEC (§|section )\d", p.read_text())]
    assert not spec, f"cite docs/, not a design document outside the repository: {spec}"
