"""`--drain-seconds`: a server terminated under load answers every request it accepted and loses no
acknowledged write.

Load runs through a real server process on a SQLite file, on keep-alive connections and on a new
connection per request. On SIGTERM the server must at once fail readiness, keep accepting and
answering new requests for the drain period, then stop listening and still finish the request in
flight at that moment. Afterwards another server on the same file must return every acknowledged
write, and nothing that was not acknowledged (a write applied but never answered would show there).

The gRPC API follows the same drain: the official Python SDK's calls are served during it, its port
closes together with the HTTP listener, and a call in flight then still completes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fixtures.operator_process import wait_for
from fixtures.sdk import sdk_client
from fixtures.sidecar import BIN, Sidecar, component_yaml, free_port, run_cli, sidecar

CLIENTS = 6


@dataclass
class Client:
    """One load thread's record: what was acknowledged, what failed and how."""

    name: str
    keep_alive: bool
    acked: list[str] = field(default_factory=list)
    acked_while_draining: int = 0
    unanswered: list[tuple[str, str]] = field(default_factory=list)
    refused: int = 0
    bad: list[str] = field(default_factory=list)


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.draining = threading.Event()
        self.stop = threading.Event()
        self.clients = [Client(f"c{i}", keep_alive=i % 2 == 0) for i in range(CLIENTS)]
        self.threads = [threading.Thread(target=self.run, args=(c,), daemon=True) for c in self.clients]

    def run(self, client: Client) -> None:
        session = httpx.Client(timeout=30) if client.keep_alive else None
        n = 0
        while not self.stop.is_set():
            key = f"{client.name}-{n}"
            body = [{"key": key, "value": {"n": n, "by": client.name}}]
            n += 1
            try:
                if session is not None:
                    r = session.post(f"{self.url}/v1.0/state/store", json=body)
                else:
                    r = httpx.post(f"{self.url}/v1.0/state/store", json=body, timeout=30)
            except httpx.ConnectError:
                client.refused += 1  # the listener is closed: never accepted
                if session is not None:
                    session.close()
                    session = httpx.Client(timeout=30)
                continue
            except httpx.TransportError as exc:
                # Never accepted by the server: a kept connection it closed as the request went out, or
                # a connection still in the kernel's accept queue when the listener closed (TCP resets
                # both). It must not have been applied, which the final read checks.
                client.unanswered.append((key, repr(exc)))
                continue
            if r.status_code == 204 and r.content == b"":
                client.acked.append(key)
                if self.draining.is_set():
                    client.acked_while_draining += 1
            else:
                client.bad.append(f"{key}: {r.status_code} {r.text}")
        if session is not None:
            session.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def listener_closed(url: str) -> bool:
    try:
        httpx.get(f"{url}/livez", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


def slow_body(url: str, started: threading.Event) -> Iterator[bytes]:
    """A request body sent across the moment the server stops listening."""
    yield b'[{"key": "slow", '
    started.set()
    wait_for("the listener to close", lambda: listener_closed(url), timeout=60, interval=0.05)
    yield b'"value": "finished after the listener closed"}]'


@contextlib.contextmanager
def draining_server(tmp_path: Path, **metadata: str) -> Iterator[tuple[subprocess.Popen[bytes], Sidecar]]:
    """A ready server draining for 10 s on SIGTERM, its store `store` on tmp_path/state.db (`metadata`
    added), its log in tmp_path/server.log; killed at the end if it still runs."""
    db = tmp_path / "state.db"
    (tmp_path / "c.yaml").write_text(
        component_yaml("store", "state.sqlite", connectionString=str(db), **metadata)
    )
    server = Sidecar(f"http://127.0.0.1:{free_port()}", free_port())
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "statestore-sidecar"),
                *("--resources-path", str(tmp_path / "c.yaml"), "--dapr-listen-addresses", "127.0.0.1"),
                *("--dapr-http-port", server.url.rsplit(":", 1)[1]),
                *("--dapr-grpc-port", str(server.grpc_port)),
                *("--metrics-port", "0", "--drain-seconds", "10"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = lambda: httpx.get(f"{server.url}/v1.0/healthz", timeout=2).status_code == 204  # noqa: E731
        wait_for("the server", lambda: _quiet(ready), timeout=30)
        yield proc, server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_terminated_under_load_answers_what_it_accepted(tmp_path: Path) -> None:
    with draining_server(tmp_path) as (proc, server):
        url = server.url
        with Load(url) as load:
            wait_for("load before the signal", lambda: all(len(c.acked) >= 20 for c in load.clients))
            proc.send_signal(signal.SIGTERM)

            # Readiness fails at once; liveness still answers.
            def not_ready() -> httpx.Response | None:
                try:
                    r = httpx.get(f"{url}/v1.0/healthz", timeout=5)
                except httpx.ConnectError:
                    pytest.fail("the server stopped listening instead of draining")
                return r if r.status_code != 204 else None

            health = wait_for("readiness to fail", not_ready, timeout=10, interval=0.02)
            assert health.status_code == 500
            assert health.json()["errorCode"] == "ERR_HEALTH_NOT_READY"
            assert httpx.get(f"{url}/livez", timeout=5).status_code == 204
            load.draining.set()
            # Answers tell kept connections to go (to another replica), so none is closed under a request.
            with httpx.Client(timeout=30) as kept:
                r = kept.get(f"{url}/v1.0/state/store/c0-0")
                assert r.status_code == 200 and r.headers["connection"] == "close"

            # New requests, on new and on kept connections, are still accepted and answered.
            wait_for(
                "writes while draining",
                lambda: all(c.acked_while_draining >= 3 for c in load.clients),
                timeout=20,
            )
            assert proc.poll() is None, "the server stopped before its drain period"

            # A request in flight when the listener closes is still answered.
            started = threading.Event()
            slow = httpx.post(f"{url}/v1.0/state/store", content=slow_body(url, started), timeout=60)
            assert started.is_set()
            assert slow.status_code == 204, slow.text
            proc.wait(60)
        assert proc.returncode in (0, -signal.SIGTERM), (tmp_path / "server.log").read_text()

    print(
        "acknowledged:",
        sum(len(c.acked) for c in load.clients),
        "while draining:",
        sum(c.acked_while_draining for c in load.clients),
        "refused after stop:",
        sum(c.refused for c in load.clients),
        "unanswered (reset, never accepted):",
        [e for c in load.clients for e in c.unanswered],
    )
    for c in load.clients:
        assert not c.bad, c.bad
        assert c.refused > 0 or c.unanswered, f"{c.name} never saw the server stop"
    acked = {k for c in load.clients for k in c.acked} | {"slow"}
    unanswered = {k for c in load.clients for k, _ in c.unanswered}

    # Another server on the same file: every acknowledged write is there, nothing unanswered is.
    with sidecar(["--resources-path", str(tmp_path / "c.yaml")]) as again:
        keys = sorted(acked | unanswered)
        r = httpx.post(f"{again}/v1.0/state/store/bulk", json={"keys": keys}, timeout=60)
        found = {e["key"]: e.get("data") for e in r.json()}
    missing = sorted(k for k in acked if found.get(k) is None)
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:10]}"
    applied = sorted(k for k in unanswered if found.get(k) is not None)
    assert not applied, f"writes applied but never answered: {applied}"
    for c in load.clients:
        for key in c.acked:
            assert found[key] == {"n": int(key.rsplit("-", 1)[1]), "by": c.name}
    assert found["slow"] == "finished after the listener closed"


def port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_grpc_follows_the_drain(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    # Writes wait this long for the database's write lock: held by the test, it keeps calls in flight.
    with draining_server(tmp_path, busyTimeout="120s", timeout="120s") as (proc, server):
        with sdk_client(server) as kept, ThreadPoolExecutor(2) as pool:
            kept.save_state("store", "before", "0")
            proc.send_signal(signal.SIGTERM)
            wait_for(
                "readiness to fail",
                lambda: httpx.get(f"{server.url}/v1.0/healthz", timeout=5).status_code == 500,
                timeout=10,
                interval=0.02,
            )

            # Calls on a kept connection and on a new one are still served.
            kept.save_state("store", "kept", "1")
            assert kept.get_state("store", "kept").data == b"1"
            with sdk_client(server) as fresh:
                fresh.save_state("store", "fresh", "2")
                assert fresh.get_state("store", "before").data == b"0"
            assert proc.poll() is None, "the server stopped before its drain period"

            # A gRPC call and an HTTP request in flight when the drain ends, waiting for the write lock.
            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            try:
                grpc_call = pool.submit(kept.save_state, "store", "in-flight", "3")
                http_call = pool.submit(
                    httpx.post,
                    f"{server.url}/v1.0/state/store",
                    json=[{"key": "in-flight-http", "value": "4"}],
                    timeout=120,
                )
                # Both ports close at the end of the drain, while both calls still wait: the gRPC
                # server stops with the HTTP listener, not after the HTTP requests in flight.
                wait_for(
                    "both listeners to close",
                    lambda: listener_closed(server.url) and port_closed(server.grpc_port),
                    timeout=60,
                    interval=0.05,
                )
                assert not grpc_call.done() and not http_call.done()
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            grpc_call.result(60)  # the SDK raises DaprGrpcError if the call was cut off
            assert http_call.result(60).status_code == 204
        proc.wait(60)
        assert proc.returncode == 0, (tmp_path / "server.log").read_text()
    assert port_closed(server.grpc_port)

    with sidecar(["--resources-path", str(tmp_path / "c.yaml")]) as again:
        keys = ["before", "kept", "fresh", "in-flight", "in-flight-http"]
        r = httpx.post(f"{again}/v1.0/state/store/bulk", json={"keys": keys}, timeout=60)
        assert {e["key"]: e.get("data") for e in r.json()} == {
            "before": 0,
            "kept": 1,
            "fresh": 2,
            "in-flight": 3,
            "in-flight-http": "4",
        }


def _quiet(probe: object) -> bool:
    try:
        return bool(probe())  # type: ignore[operator]
    except httpx.TransportError:
        return False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drain-seconds", "-1"], "between 0 and 3600"),
        (["--drain-seconds", "soon"], "not a number of seconds"),
        (["--drain-seconds", "5", "--workers", "2"], "needs a single server process"),
    ],
)
def test_bad_drain_flags_are_refused(args: list[str], message: str) -> None:
    result = run_cli(args)
    assert result.returncode == 2
    assert message in result.stderr
