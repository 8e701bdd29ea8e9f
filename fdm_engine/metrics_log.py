"""RUN_DIR/metrics.jsonl: one JSON object per line, appended by `fdm train` (trainers/loop.py) and read
by `fdm report`, so it lives here, below both.

Each record has `step` (optimiser steps done), `loss` (mean training loss since the previous
record), `lr`, `grad_norm`, `steps_per_s`, `samples_per_s` and `time` (seconds since the run
started, resumptions included). On resume the records after the checkpoint's step are dropped,
since the resumed run recomputes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from fdm_engine.files import atomic_write


class MetricsLog:
    def __init__(self, path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def read(self) -> list[dict]:
        """Every complete record (a line cut by a kill is skipped)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Keep the records of steps <= `step` (atomically)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        with atomic_write(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
