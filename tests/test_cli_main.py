"""The `fdm` entry point: a command group given no command prints its help."""

import pytest

from cli_helpers import run_fdm


@pytest.mark.parametrize("argv", [[], ["schemes"], ["data"]], ids=["fdm", "schemes", "data"])
def test_a_group_alone_prints_its_help(capsys, argv):
    code, out, err = run_fdm(capsys, *argv)
    assert code == 0 and err == "", err
    # the help as `--help` formats it, many lines, not a one-line error
    _, help_out, _ = run_fdm(capsys, *argv, "--help")
    assert out == help_out and out.startswith(f"Usage: fdm {' '.join(argv)}".rstrip() + " ")
    assert "Commands:" in out and len(out.splitlines()) > 5
