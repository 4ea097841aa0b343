"""GET, SAVE, bulk get and transaction served inside the HTTP protocol (hot_http.py) answer byte for
byte as the ASGI routes.

Each request is sent twice to a real server: as is (served by the protocol) and with a path that
needs cleaning (`/v1.0//state/...`), which the protocol leaves to the ASGI application. Apart from
the Date header, both answers must be identical.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures.sidecar import sidecar_process

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: mem}
spec: {type: state.in-memory, version: v1, metadata: []}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder: Path = tmp_path_factory.mktemp("hot")
    (folder / "c.yaml").write_text(COMPONENT)
    with sidecar_process(["--resources-path", str(folder), "--app-id", "hot", "--log-level", "warn"]) as s:
        host, port = s.url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(address: tuple[str, int], raw: bytes, answers: int = 1) -> list[bytes]:
    """Send raw bytes on one connection; the raw answers (status line, headers, body) read back."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        out: list[bytes] = []
        while len(out) < answers:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                length = int(match.group(1)) if match else 0
                if len(rest) < length:
                    break
                out.append(head + b"\r\n\r\n" + rest[:length])
                data = rest[length:]
        return out


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", answer)


def request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\n{extra}"
    if body or method in ("POST", "PUT"):
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def both(address: tuple[str, int], method: str, path: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """(protocol's answer, ASGI application's answer) to the same request."""
    (hot,) = exchange(address, request(method, path, body))
    (asgi,) = exchange(address, request(method, path.replace("/v1.0/", "/v1.0//", 1), body))
    return without_date(hot), without_date(asgi)


CASES = [
    ("POST", "/v1.0/state/mem", b'[{"key":"a","value":{"x":1}}]'),
    ("PUT", "/v1.0/state/mem", b'[{"key":"t","value":"v","metadata":{"ttlInSeconds":"100"}}]'),
    ("GET", "/v1.0/state/mem/a", b""),
    ("GET", "/v1.0/state/mem/a?consistency=strong", b""),
    ("GET", "/v1.0/state/mem/missing", b""),
    ("GET", "/v1.0/state/nostore/a", b""),
    ("GET", "/v1.0/state/mem/bad%zzescape", b""),
    ("GET", "/v1.0/state/mem/a?consistency=nonsense", b""),
    ("POST", "/v1.0/state/mem", b"{not json"),
    ("POST", "/v1.0/state/mem", b"null"),
    ("POST", "/v1.0/state/mem", b'{"key":"a"}'),
    ("POST", "/v1.0/state/mem", b'[{"key":"a","value":1,"etag":"999"}]'),
    ("POST", "/v1.0/state/nostore", b'[{"key":"a","value":1}]'),
    ("POST", "/v1.0/state/mem", b'[{"value":1}]'),
    ("POST", "/v1.0/state/mem/bulk", b'{"keys":["a","missing"]}'),
    ("PUT", "/v1.0/state/mem/bulk", b'{"keys":["a"],"parallelism":2,"metadata":{"x":"y"}}'),
    ("POST", "/v1.0/state/mem/bulk", b'{"keys":[]}'),
    ("POST", "/v1.0/state/mem/bulk", b"null"),
    ("POST", "/v1.0/state/mem/bulk", b'{"keys":"a"}'),
    ("POST", "/v1.0/state/mem/bulk", b"{not json"),
    ("POST", "/v1.0/state/nostore/bulk", b'{"keys":["a"]}'),
    (
        "POST",
        "/v1.0/state/mem/transaction",
        b'{"operations":[{"operation":"upsert","request":{"key":"t1","value":1e3}},'
        b'{"operation":"delete","request":{"key":"gone"}}]}',
    ),
    ("PUT", "/v1.0/state/mem/transaction?metadata.ttlInSeconds=60", b'{"operations":[]}'),
    (
        "POST",
        "/v1.0/state/mem/transaction",
        b'{"operations":[{"operation":"nonsense","request":{"key":"a"}}]}',
    ),
    ("POST", "/v1.0/state/mem/transaction", b'{"operations":[{"operation":"upsert","request":{"value":1}}]}'),
    ("POST", "/v1.0/state/mem/transaction", b'{"operations":{}}'),
    ("POST", "/v1.0/state/mem/transaction", b"[]"),
    ("POST", "/v1.0/state/nostore/transaction", b'{"operations":[]}'),
    ("POST", "/v1.0/state/mem/nosuchroute", b"{}"),
]


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_same_answer_as_the_asgi_routes(server: tuple[str, int], method: str, path: str, body: bytes) -> None:
    exchange(server, request("POST", "/v1.0/state/mem", b'[{"key":"a","value":{"x":1}}]'))
    hot, asgi = both(server, method, path, body)
    if b"etag: " in hot:  # a save in between changes the etag: compare its shape
        hot = re.sub(rb"etag: \S+", b"etag: E", hot)
        asgi = re.sub(rb"etag: \S+", b"etag: E", asgi)
    hot = re.sub(rb"(ttlexpiretime: )\S+", rb"\1T", hot)
    asgi = re.sub(rb"(ttlexpiretime: )\S+", rb"\1T", asgi)
    assert hot == asgi
    assert hot.startswith(b"HTTP/1.1 ")


def test_ttl_header_and_saved_value(server: tuple[str, int]) -> None:
    exchange(
        server,
        request(
            "POST", "/v1.0/state/mem", b'[{"key":"ttl","value":[1, 2],"metadata":{"ttlInSeconds":"60"}}]'
        ),
    )
    (answer,) = exchange(server, request("GET", "/v1.0/state/mem/ttl"))
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert re.search(rb"\r\nmetadata.ttlexpiretime: 20\d\d-\d\d-\d\dT", head)
    assert b"\r\ncontent-type: application/json" in head
    assert body == b"[1, 2]"  # stored as sent


def test_pipelined_and_mixed_requests_answer_in_order(server: tuple[str, int]) -> None:
    raw = b"".join(
        [
            request("POST", "/v1.0/state/mem", b'[{"key":"p1","value":"one"}]'),
            request("GET", "/v1.0/state/mem/p1"),
            request("GET", "/v1.0/metadata"),  # an ASGI route between hot ones
            request("POST", "/v1.0/state/mem/bulk", b'{"keys":["p1"]}'),
            request("GET", "/v1.0//state/mem/p1"),
            request("GET", "/v1.0/state/mem/p1"),
        ]
    )
    answers = exchange(server, raw, answers=6)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
    ]
    assert answers[1].endswith(b'"one"') and answers[5].endswith(b'"one"')
    assert b'"id":"hot"' in answers[2]


def test_connection_close_is_honoured(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(request("GET", "/v1.0/state/mem/a", extra="connection: close\r\n"))
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the server closed the connection
            data += chunk
    assert data.startswith(b"HTTP/1.1 ")
    assert b"\r\nconnection: close\r\n" in data


def test_large_body_and_keep_alive(server: tuple[str, int]) -> None:
    value = b'"' + b"x" * 300_000 + b'"'
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", timeout=30) as client:
        for i in range(3):
            r = client.post("/v1.0/state/mem", content=b'[{"key":"big%d","value":%s}]' % (i, value))
            assert r.status_code == 204
            r = client.get(f"/v1.0/state/mem/big{i}")
            assert r.status_code == 200 and r.content == value


def test_metrics_count_hot_requests(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(COMPONENT)
    from fixtures.sidecar import free_port

    port = free_port()
    args = ["--resources-path", str(tmp_path), "--metrics-port", str(port)]
    with sidecar_process(args) as s:
        with httpx.Client(base_url=s.url) as client:
            for _ in range(3):
                assert client.post("/v1.0/state/mem", json=[{"key": "m", "value": 1}]).status_code == 204
                assert client.get("/v1.0/state/mem/m").status_code == 200
                assert client.post("/v1.0/state/mem/bulk", json={"keys": ["m"]}).status_code == 200
                transaction = {"operations": [{"operation": "delete", "request": {"key": "x"}}]}
                assert client.post("/v1.0/state/mem/transaction", json=transaction).status_code == 204
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'statestore_http_requests_total{operation="get",status="200"} 3.0' in text
    assert 'statestore_http_requests_total{operation="save",status="204"} 3.0' in text
    assert 'statestore_http_requests_total{operation="bulk",status="200"} 3.0' in text
    assert 'statestore_http_requests_total{operation="transaction",status="204"} 3.0' in text


async def test_the_protocol_serves_hot_requests_and_leaves_the_rest(tmp_path: Path) -> None:
    """In process: which requests reach the protocol's own path (counted), under the server's options."""
    import argparse
    import asyncio

    import uvicorn

    from fixtures.sidecar import free_port
    from statestore_sidecar import server as srv
    from statestore_sidecar.components import Component, validate
    from statestore_sidecar.hot_http import HotHttpProtocol, HotRoutes

    args = argparse.Namespace(
        app_id="hot", dapr_grpc_port=0, reload_seconds=0, resources_path=None, enable_metrics=False,
        metrics_port=0, max_body_size=4 << 20, dapr_listen_addresses="127.0.0.1", dapr_http_port=free_port(),
    )  # fmt: skip
    options = srv._uvicorn_options(args)
    assert options["http"] is HotHttpProtocol
    app = srv.build_app(args, [validate(Component(name="mem", type="state.in-memory"), {})], None)
    hot: HotRoutes = app.hot_routes  # type: ignore[attr-defined]
    served: list[str] = []
    answer = hot.answer

    async def counting(op: str, path: bytes, query: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        served.append(op)
        return await answer(op, path, query, body)

    hot.answer = counting
    server = uvicorn.Server(uvicorn.Config(app, **{**options, "loop": "asyncio", "lifespan": "on"}))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(600):  # up to 30 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.dapr_http_port}") as client:
            assert (await client.post("/v1.0/state/mem", json=[{"key": "k", "value": 1}])).status_code == 204
            assert (await client.get("/v1.0/state/mem/k")).status_code == 200
            assert (await client.get("/v1.0//state/mem/k")).status_code == 200  # cleaned: ASGI
            assert (await client.post("/v1.0/state/mem/bulk", json={"keys": ["k"]})).status_code == 200
            transaction = {"operations": [{"operation": "upsert", "request": {"key": "t", "value": 1}}]}
            assert (await client.post("/v1.0/state/mem/transaction", json=transaction)).status_code == 204
            assert (await client.post("/v1.0/state/mem/other", json={})).status_code == 405  # ASGI
            assert (await client.delete("/v1.0/state/mem/k")).status_code == 204
            assert (await client.get("/v1.0/state/mem/k")).status_code == 204
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert served == ["save", "get", "bulk", "transaction", "get"]
