"""retain_freed_memory: after it, freeing and re-allocating large tensors no longer page-faults.

Run in subprocesses: the setting is process-wide and the fault counts need a fresh heap.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")

PROBE = """
import resource, torch
from fdm_engine.cpu_memory import retain_freed_memory

def faults():
    # page faults of two rounds of a forward-like pattern: ten 16 MiB blocks alive at once, then freed
    def one_round():
        blocks = [torch.empty(4 << 20).fill_(1.0) for _ in range(10)]
        del blocks
    one_round()  # warm-up: the first touch faults in any case
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    one_round()
    one_round()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
applied = retain_freed_memory()
print(default, applied, faults(), retain_freed_memory())
"""


def probe(**env) -> tuple[int, bool, int, bool]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return int(out[0]), out[1] == "True", int(out[2]), out[3] == "True"


def test_retained_memory_is_reused_without_page_faults():
    default, applied, after, again = probe(FDM_RETAIN_FREED_MEMORY="1")
    if not applied:
        pytest.skip("not glibc")
    assert again  # idempotent
    # 2 x 160 MiB touched: 81920 fresh 4 KiB pages when glibc unmaps or trims (fewer with huge pages).
    assert default >= 1000, default
    assert after < 50, (default, after)


def test_opt_out_leaves_malloc_alone():
    _, applied, _, again = probe(FDM_RETAIN_FREED_MEMORY="0")
    assert not applied and not again
