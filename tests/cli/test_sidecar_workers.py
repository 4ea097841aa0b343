"""`--workers N`: N server processes share the port, the store file and one metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from fixtures.sidecar import BIN, free_port

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.sqlite
  version: v1
  metadata:
    - name: connectionString
      value: "{db}"
"""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(c) for c in handle.read().split()]
    return found


def _workers(pid: int) -> list[int]:
    """Children of the supervisor that are uvicorn workers (not multiprocessing's resource tracker)."""
    out = []
    for child in _children(pid):
        with open(f"/proc/{child}/cmdline", "rb") as handle:
            if b"spawn_main" in handle.read():
                out.append(child)
    return out


def test_two_workers_serve_one_store_and_one_metrics_endpoint(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(COMPONENT.format(db=tmp_path / "state.db"))
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "statestore-sidecar"),
            "--resources-path",
            str(tmp_path),
            "--app-id",
            "myapp",
            "--dapr-http-port",
            str(port),
            "--dapr-listen-addresses",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/v1.0/healthz", timeout=2).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready in 60 s"
            time.sleep(0.1)
        assert len(_workers(proc.pid)) == 2
        # A new connection per request, so both workers take some; they share the SQLite file.
        for i in range(20):
            r = httpx.post(f"{url}/v1.0/state/store", json=[{"key": f"k{i}", "value": {"n": i}}])
            assert r.status_code == 204
        for i in range(20):
            r = httpx.get(f"{url}/v1.0/state/store/k{i}")
            assert r.status_code == 200 and r.json() == {"n": i}
        # Every worker's requests are counted on the one metrics port.
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        counts = {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("statestore_http_requests_total{")
        }
        assert counts.get('operation="save",status="204"') == 20, counts
        assert counts.get('operation="get",status="200"') == 20, counts
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0
