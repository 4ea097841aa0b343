"""`bench/operator_scale.py`, the command bench/README.md gives, at a small scale: every Component
ends `Ready`, and the figures the README reports (the operator's requests, reconciliations, the
control plane's CPU and kube-apiserver's latencies) are measured, not left empty. Speed itself is
never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.k8s


def test_operator_scale_runs(tmp_path: Path) -> None:
    out = tmp_path / "operator.json"
    command = [sys.executable, "-m", "bench.operator_scale", "--components", "6", "--namespaces", "2"]
    done = subprocess.run(
        [*command, "--poll", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["components"] == 6
    assert result["ready_s"] is not None and result["validated_and_created_s"] is not None
    final = result["timeline"][-1]
    assert final["ready"] == final["validated"] == final["deployments"] == final["services"] == 6
    # Each Component: read, its ConfigMap, Deployment and Service applied, its status written.
    assert result["operator_api_requests"]["GET"] >= 6 * 4
    assert result["operator_api_requests"]["PATCH"] >= 6 * 4
    assert result["reconciliations"]["success"] >= 6
    assert result["operator_peak_rss_mb"] > 0 and result["operator_cpu_s"] > 0
    assert set(result["control_plane_cpu_s"]) >= {"etcd", "kube-apiserver", "kube-controller-manager"}
    apiserver = result["apiserver"]
    assert apiserver["by_resource"]["APPLY services"]["requests"] >= 6
    assert apiserver["by_resource"]["PATCH components/status"]["requests"] >= 6
    assert apiserver["p99_ms_at_most"] > 0
