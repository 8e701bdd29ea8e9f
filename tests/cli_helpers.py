"""Running `fdm` in-process from tests."""

from cli.main import main


def run_fdm(capsys, *argv):
    """`fdm ARGV` in-process -> (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err
