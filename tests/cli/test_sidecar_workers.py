"""`--workers N`: N server processes share the port, the store file and one metrics endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from fixtures.sidecar import BIN, component_yaml, free_port
from statestore_testing.waiting import wait_for


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


def _server_side_inode(port: int, client_port: int) -> str | None:
    """The socket inode of the server's end of the connection from `client_port` (kernel's table)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(end.split(":")[1], 16) for end in fields[1:3])
        if (local, remote) == (port, client_port):
            return fields[9]
    return None


def _worker_serving_one_connection(port: int, workers: list[int]) -> int | None:
    """Open a connection, have one request answered on it, and say which worker process holds it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 204"), "the request was not answered"
        inode = _server_side_inode(port, conn.getsockname()[1])
        for pid in workers:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue  # closed meanwhile
    return None


def test_two_workers_serve_one_store_and_one_metrics_endpoint(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        component_yaml("store", "state.sqlite", connectionString=str(tmp_path / "state.db"))
    )
    # Every port given: the default gRPC port (50001) may be another server's on a shared machine.
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
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
            "--dapr-grpc-port",
            str(grpc_port),
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
        workers = wait_for("two workers", lambda: w if len(w := _workers(proc.pid)) == 2 else None)
        # Both really serve: connections are taken by either worker, so open them until each was seen.
        served: dict[int, int] = {}
        deadline = time.monotonic() + 120
        while len(served) < 2:
            assert time.monotonic() < deadline, f"only {served} of {workers} served in 120 s"
            pid = _worker_serving_one_connection(port, workers)
            assert pid in workers, f"no worker holds the connection (found {pid})"
            served[pid] = served.get(pid, 0) + 1
        print(f"connections per worker until both had served: {served}")
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
