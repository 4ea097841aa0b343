"""The body limit against the real server process: oversized bodies are refused fast, without being
read whole, whatever the client announces or streams. Raw sockets, so the client can keep sending
after the server has answered and we can count what it managed to send."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fixtures.sidecar import sidecar

LIMIT = 1 << 20  # --max-body-size 1Mi
GIB = 1 << 30
CHUNK = 64 * 1024


def _max_buffer(name: str) -> int:
    """The largest size the kernel lets a TCP socket buffer grow to (the third of min/default/max)."""
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])


# All that can be sent and not yet read: the client's send buffer and the server's receive buffer.
KERNEL_BUFFERS = _max_buffer("tcp_wmem") + _max_buffer("tcp_rmem")

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.in-memory
  version: v1
  metadata: []
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("resources")
    (folder / "store.yaml").write_text(COMPONENT)
    log = folder.parent / "sidecar.log"
    with sidecar(
        ["--resources-path", str(folder), "--app-id", "app", "--max-body-size", "1Mi"], log=log
    ) as url:
        yield url


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Sender(threading.Thread):
    """Streams a body (fixed-length or chunked) until told to stop or the server closes the socket."""

    def __init__(self, sock: socket.socket, *, chunked: bool, total: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.chunked, self.total, self.pause = sock, chunked, total, pause
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        piece = b"[" + b" " * (CHUNK - 1)  # the start of a JSON array, then whitespace
        try:
            while self.sent < self.total and not self.stop.is_set():
                data = piece if self.sent == 0 else b" " * CHUNK
                if self.chunked:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.sock.sendall(data)
                self.sent += len(data)
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            pass  # the server closed the connection: exactly what it may do


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the first response on the socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


ROUTES = [
    ("/v1.0/state/store", "ERR_MALFORMED_REQUEST"),
    ("/v1.0/state/store/bulk", "ERR_MALFORMED_REQUEST"),
    ("/v1.0/state/store/transaction", "ERR_MALFORMED_REQUEST"),
    ("/v1.0-alpha1/state/store/query", "ERR_BODY_READ"),
]


@pytest.mark.parametrize(("path", "code"), ROUTES, ids=[p.rsplit("/", 1)[1] for p, _ in ROUTES])
def test_announced_gibibyte_is_refused_before_it_is_sent(server: str, path: str, code: str) -> None:
    """Content-Length 1 GiB, body trickling in: the answer comes at once, after a few KiB."""
    with connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: state\r\nContent-Type: application/json\r\n"
            f"Content-Length: {GIB}\r\n\r\n".encode()
        )
        sender = Sender(sock, chunked=False, total=GIB, pause=0.05)  # ~1.3 MB/s: 13 minutes for all
        started = time.monotonic()
        sender.start()
        status, headers, body = read_response(sock, timeout=10)
        elapsed = time.monotonic() - started
        sender.stop.set()
        sender.join(10)
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["errorCode"] == code and "too large" in payload["message"]
    assert elapsed < 2, elapsed
    assert sender.sent < 4 * LIMIT, sender.sent  # a tiny part of the GiB announced
    assert httpx.get(f"{server}/v1.0/healthz", timeout=5).status_code == 204


@pytest.mark.parametrize(("path", "code"), ROUTES, ids=[p.rsplit("/", 1)[1] for p, _ in ROUTES])
def test_chunked_body_without_length_is_cut_at_the_limit(server: str, path: str, code: str) -> None:
    """No Content-Length, chunks as fast as the socket takes them: refused once past the limit."""
    with connect(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: state\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sender = Sender(sock, chunked=True, total=GIB, pause=0)
        started = time.monotonic()
        sender.start()
        status, _, body = read_response(sock, timeout=20)
        elapsed = time.monotonic() - started
        sender.stop.set()
        sender.join(10)
    assert status == 400, body
    payload = json.loads(body)
    assert payload["errorCode"] == code and "too large" in payload["message"]
    assert elapsed < 10, elapsed
    # What was sent: the limit, plus whatever the kernel's socket buffers held meanwhile (they grow
    # to their maximum sizes while the server is slow to read, as on a loaded machine).
    assert sender.sent < LIMIT + KERNEL_BUFFERS, sender.sent
    assert httpx.get(f"{server}/v1.0/healthz", timeout=5).status_code == 204


def test_body_at_the_limit_is_read(server: str) -> None:
    value = "x" * (LIMIT - 100)
    body = json.dumps([{"key": "big", "value": value}]).encode()
    assert len(body) <= LIMIT
    r = httpx.post(f"{server}/v1.0/state/store", content=body, timeout=10)
    assert r.status_code == 204, r.text
    r = httpx.post(f"{server}/v1.0/state/store", content=body + b" " * (LIMIT - len(body) + 1), timeout=10)
    assert r.status_code == 400 and "too large" in r.json()["message"]


def test_metadata_put_is_limited_too(server: str) -> None:
    r = httpx.put(f"{server}/v1.0/metadata/big", content=b"x" * (LIMIT + 1), timeout=10)
    assert r.status_code == 400 and "too large" in r.json()["message"]
    assert "big" not in httpx.get(f"{server}/v1.0/metadata", timeout=5).json()["extended"]


def test_bodies_sent_to_routes_that_ignore_them_do_not_stall(server: str) -> None:
    """A GET announcing a huge body is answered without the body being read."""
    with connect(server) as sock:
        sock.sendall(
            f"GET /v1.0/state/store/k HTTP/1.1\r\nHost: state\r\nContent-Length: {GIB}\r\n\r\n".encode()
        )
        started = time.monotonic()
        status, _, _ = read_response(sock, timeout=10)
    assert status == 204
    assert time.monotonic() - started < 2
    assert httpx.get(f"{server}/v1.0/healthz", timeout=5).status_code == 204
