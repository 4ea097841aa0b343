"""The benchmark's smoke mode: a few seconds against real servers, checking that real figures come out.

Speed is not asserted here (timed assertions flake on shared machines); bench/README.md has the
figures of a full run. What is asserted: every phase of every backend ran, every response was 2xx,
the figures are positive, and a bulk get of 100 keys is one backend round trip.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| redis | GET | api |" in done.stdout  # the report's table
    assert "| redis | GET | grpc |" in done.stdout
    assert "| redis | GET | HTTP | " in done.stdout  # ours against daprd
    assert "| sqlite | TRANSACTION | gRPC | " in done.stdout
    assert "Redis SAVE gRPC max req/s ours / daprd" in done.stdout  # the targets, from the figures
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_every_backend_operation_and_path_ran(results: dict[str, Any]) -> None:
    assert [b["backend"] for b in results["backends"]] == ["redis", "postgresql", "sqlite"]
    for backend in results["backends"]:
        assert set(backend["ops"]) == {"get", "save", "bulk", "transaction"}
        for op, runs in backend["ops"].items():
            # The direct path runs the store's own statements for a single GET or SAVE only.
            direct = {"direct"} if op in ("get", "save") else set()
            assert set(runs) == {*direct, "api", "grpc", "daprd-http", "daprd-grpc"}, op


def test_figures_are_real(results: dict[str, Any]) -> None:
    for backend in results["backends"]:
        for op, runs in backend["ops"].items():
            for path, run in runs.items():
                where = f"{backend['backend']} {op} {path}"
                for phase in (run["max"], run["fixed"]):
                    assert phase["requests"] > 0, where
                    assert phase["rate"] > 0, where
                    assert phase["errors"] == 0, where
                    # Every response 2xx: 200 for a GET of a seeded key or a bulk get, 204 for a save
                    # or a transaction.
                    assert phase["ok_2xx"] == phase["requests"], (where, phase["statuses"])
                    for p in ("p50_ms", "p90_ms", "p99_ms"):
                        assert math.isfinite(phase[p]) and phase[p] > 0, (where, p)
                    assert phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"], where
                assert run["fixed"]["server_cpu_s_per_1000"] >= 0, where
            assert runs["api"]["server_rss_mb"] > 10, backend["backend"]
            assert runs["api"]["server_processes"] >= 1


def test_bulk_get_of_100_keys_is_one_round_trip(results: dict[str, Any]) -> None:
    by_name = {b["backend"]: b for b in results["backends"]}
    redis = by_name["redis"]["bulk"]
    # 100 HMGETs, pipelined: Redis reads them in one go, where 100 single gets take 100 reads.
    assert redis["bulk_get_100"]["commands"].get("hmget") == 100
    assert redis["bulk_get_100"]["socket_reads_by_redis"] <= 2
    assert redis["single_get_x100"]["socket_reads_by_redis"] >= 100
    # One statement in all: the bulk SELECT ... key = ANY($1), and no pool reset after it.
    pg = by_name["postgresql"]["bulk"]["bulk_get_100"]
    assert pg["statements"] == 1, pg
    assert "= ANY(" in next(iter(pg["by_statement"]))
    assert by_name["postgresql"]["bulk"]["single_get_x100"]["statements"] == 100
