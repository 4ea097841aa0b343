"""`--workers N`: N server processes share the port, the store file and one metrics endpoint."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fixtures.sidecar import BIN, component_doc, component_yaml, free_port
from statestore_testing.databases import RedisServer
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


@contextlib.contextmanager
def _two_workers(resources: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """`statestore-sidecar --workers 2` on `resources`: the process, its HTTP and metrics ports."""
    # Every port given: the default gRPC port (50001) may be another server's on a shared machine.
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "statestore-sidecar"),
            "--resources-path",
            str(resources),
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
    try:
        yield proc, port, metrics_port
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0


def _wait_healthy(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/v1.0/healthz", timeout=2).status_code == 204:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "not ready in 60 s"
        time.sleep(0.1)


def _both_serve(proc: subprocess.Popen[bytes], port: int) -> dict[int, int]:
    """Connections per worker, opened until each worker has answered one with 204."""
    workers = wait_for("two workers", lambda: w if len(w := _workers(proc.pid)) == 2 else None)
    # Connections are taken by either worker, so open them until each was seen.
    served: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while len(served) < 2:
        assert time.monotonic() < deadline, f"only {served} of {workers} served in 120 s"
        pid = _worker_serving_one_connection(port, workers)
        assert pid in workers, f"no worker holds the connection (found {pid})"
        served[pid] = served.get(pid, 0) + 1
    return served


def test_two_workers_serve_one_store_and_one_metrics_endpoint(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        component_yaml("store", "state.sqlite", connectionString=str(tmp_path / "state.db"))
    )
    with _two_workers(tmp_path) as (proc, port, metrics_port):
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(proc, url)
        print(f"connections per worker until both had served: {_both_serve(proc, port)}")
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


def _hanging_redis(redis: RedisServer) -> dict[str, Any]:
    """A Redis store whose initialisation waits a minute for a server that does not answer."""
    doc = component_doc(
        "store",
        "state.redis",
        redisHost=redis.address,
        redisPassword=redis.password,
        readTimeout="60s",
        dialTimeout="60s",
    )
    doc["spec"]["initTimeout"] = "60s"
    return doc


def test_no_worker_answers_before_its_stores_first_initialisation(tmp_path: Path) -> None:
    """Once one worker has said ready, no other says not ready because it is still starting: each
    takes connections only after its stores' first initialisation attempt."""
    with RedisServer() as redis:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(_hanging_redis(redis)))
        redis.pause()  # every worker's first attempt hangs in the handshake
        try:
            with _two_workers(tmp_path) as (proc, port, _):
                wait_for("two workers", lambda: len(_workers(proc.pid)) == 2 or None)
                # Meanwhile no request is answered, "not ready" included: no worker is serving.
                for _ in range(4):
                    with pytest.raises(httpx.TransportError):
                        httpx.get(f"http://127.0.0.1:{port}/v1.0/healthz", timeout=1)
                    time.sleep(0.5)
                redis.resume()
                _wait_healthy(proc, f"http://127.0.0.1:{port}")
                # From the first 204 on, every connection is answered 204, whichever worker takes it.
                served = _both_serve(proc, port)
                for _ in range(20):
                    assert httpx.get(f"http://127.0.0.1:{port}/v1.0/healthz").status_code == 204
                print(f"connections per worker until both had served: {served}")
        finally:
            redis.resume()


def test_a_stop_during_start_up_does_not_wait_for_a_hung_backend(tmp_path: Path) -> None:
    with RedisServer() as redis:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(_hanging_redis(redis)))
        redis.pause()
        try:
            with _two_workers(tmp_path) as (proc, _, _):
                wait_for("two workers", lambda: len(_workers(proc.pid)) == 2 or None)
                time.sleep(1)  # the workers are in their start-up, waiting for the store
            # `_two_workers` stopped it (SIGTERM) and required exit code 0 within 20 s.
        finally:
            redis.resume()
