"""`bench/query_speed.py`, the command bench/README.md gives, runs to the end on both SQL stores and
measures real queries (speed itself is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.backends


def test_query_speed_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.query_speed", "--rows", "120", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results) == {"postgresql", "mysql"}
    for store, queries in results.items():
        assert queries["eq"]["items"] == 20, store  # one document in six is in CA
        assert queries["in+sort+limit"]["items"] == 40, store
        assert all(q["median_ms"] > 0 for q in queries.values()), store
