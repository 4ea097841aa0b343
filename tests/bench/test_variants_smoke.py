"""`bench/variants.py`, as bench/README.md runs it, in a few seconds: every variant serves every
request and real CPU figures come out (speed itself is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.backends


def test_variants_alternate_and_measure(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    command = [
        sys.executable, "-m", "bench.variants", "--nice", "0", "--variants", "uvicorn,daprd,bare-uvicorn",
        "--ops", "get,save", "--rounds", "2", "--seconds", "0.5", "--rate", "200", "--max-seconds", "0.5",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    ran = [(r["variant"], r["round"], r["op"]) for r in rows]
    assert ran == [
        (variant, round_, op)
        for round_ in (1, 2)
        for variant, ops in (
            ("uvicorn", ("get", "save")),
            ("daprd", ("get", "save")),
            ("bare-uvicorn", ("get",)),
        )
        for op in ops
    ]
    for row in rows:
        assert row["ok"] == row["requests"] == 100, row
        assert row["cpu_us"] > 0 and row["rss_max_mb"] > 0, row
        assert len(row["loadavg"].split()) == 3
