"""benchmarks/run_all.py refuses an unknown benchmark name before it runs or writes anything."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_benchmark_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("hand notes\n")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--only", "sampling,foo",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "'foo'" in r.stderr and "sampling" in r.stderr
    assert out.read_text() == "hand notes\n"
