"""Switching an app between daprd and statestore-sidecar on the same database, in both directions.

For each store, one server writes a mix of values (objects, strings, large and exponent numbers,
unicode, binary, TTLs, a transaction), is stopped, and the other starts on the same database with
the same app id and Component: it runs its migrations without error, reads every value back over
HTTP get and bulk get (the same bytes and ETags the writer gave), reports and honours the writer's
TTLs, and makes ETag-guarded writes on what the other wrote.

Binary values reach daprd over gRPC (the Go SDK sends bytes without a content type); our HTTP API
takes JSON values only, so for our side they are written through the store our server runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fixtures.backends import MariaDBServer, PostgresServer, RedisServer, unique_name
from fixtures.go_client import go_client
from fixtures.sidecar import sidecar
from statestore_sidecar.schema import resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import SetRequest
from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends

APP_ID = "switch-app"
STORE = "store"
# Each value as sent in the save body. daprd decodes and re-encodes values (a float64 for every
# number), so what is compared across the switch is what the writer itself returns.
VALUES: dict[str, bytes] = {
    "object": b'{"name": "caf\\u00e9", "nested": {"list": [1, 2.5, true, null]}}',
    "string": b'"hello world"',
    "string-with-json": b'"{\\"a\\":1}"',
    "large-int": b"9223372036854775807",
    "exponent": b"1e3",
    "unicode": b'{"emoji": "\xe2\x8f\xb1\xef\xb8\x8f", "text": "gr\xc3\xbc\xc3\x9fe"}',
    "long-ttl": b'{"ttl": "hour"}',
    "short-ttl": b'"soon gone"',
}
# The short TTL has passed by the time the reader starts: the row is still in the database (no
# cleanup has run), and the reader must not serve it.
TTLS = {"long-ttl": 3600, "short-ttl": 1}
BINARY = b"\x00\x01binary\xc3\xbf\x7f"  # bytes that are not JSON


@dataclass(frozen=True)
class Case:
    name: str
    component: DaprComponent
    daprd_reports_ttl: bool = True  # daprd 1.14's Redis store never reports ttlExpireTime


@pytest.fixture(params=["sqlite", "redis", "postgresql", "postgresql-v2", "mysql"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    backend: str = request.param
    if backend == "sqlite":
        return Case(
            backend, DaprComponent(STORE, "state.sqlite", {"connectionString": str(tmp_path / "s.db")})
        )
    if backend == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        metadata = {"redisHost": redis.address, "redisPassword": redis.password}
        return Case(backend, DaprComponent(STORE, "state.redis", metadata), daprd_reports_ttl=False)
    if backend == "postgresql-v2":
        pg2: PostgresServer = request.getfixturevalue("postgres_server")
        metadata = {
            "connectionString": pg2.connection_string(),
            "tablePrefix": unique_name("p") + "_",
            "metadataTableName": unique_name("meta"),
        }
        return Case(backend, DaprComponent(STORE, "state.postgresql", metadata, version="v2"))
    if backend == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        metadata = {
            "connectionString": pg.connection_string(),
            "tableName": unique_name("state"),
            "metadataTableName": unique_name("meta"),
        }
        return Case(backend, DaprComponent(STORE, "state.postgresql", metadata))
    mariadb: MariaDBServer = request.getfixturevalue("mariadb_server")
    metadata = {
        "connectionString": mariadb.dsn(),
        "tableName": unique_name("state"),
        "metadataTableName": unique_name("meta"),
    }
    return Case(backend, DaprComponent(STORE, "state.mysql", metadata))


@contextmanager
def ours(component: DaprComponent, workdir: Path) -> Iterator[str]:
    resources = workdir / "ours"
    resources.mkdir(exist_ok=True)
    (resources / f"{component.name}.yaml").write_text(component.manifest())
    with sidecar(["--resources-path", str(resources), "--app-id", APP_ID], log=workdir / "ours.log") as url:
        yield url


@contextmanager
def daprd(component: DaprComponent, workdir: Path) -> Iterator[Daprd]:
    folder = workdir / f"daprd-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    with Daprd([component], folder, app_id=APP_ID) as server:
        yield server


def write_through_ours_store(component: DaprComponent, key: str, value: bytes) -> None:
    """What our gRPC API stores for bytes: written through the store the server runs."""

    async def write() -> None:
        schema = schema_for(component.type, component.version)
        config = StoreConfig(component.name, resolve(schema, dict(component.metadata)), component.version)
        store = create_store(component.type, config)
        await store.init()
        try:
            await store.set(SetRequest(f"{APP_ID}||{key}", value))
        finally:
            await store.close()

    asyncio.run(write())


def write_mix(url: str, base: str) -> None:
    """The values, TTLs and a transaction, through the state HTTP API at `url`."""
    state = f"{url}/v1.0/state/{STORE}"
    items = []
    for name, value in VALUES.items():
        ttl = TTLS.get(name)
        metadata = b', "metadata": {"ttlInSeconds": "%d"}' % ttl if ttl else b""
        items.append(b'{"key": "%s-%s", "value": %s%s}' % (base.encode(), name.encode(), value, metadata))
    r = httpx.post(
        state, content=b"[" + b", ".join(items) + b"]", headers={"content-type": "application/json"}
    )
    assert r.status_code == 204, r.text
    assert httpx.post(state, json=[{"key": f"{base}-deleted", "value": 1}]).status_code == 204
    tx = {
        "operations": [
            {"operation": "upsert", "request": {"key": f"{base}-tx1", "value": {"in": "transaction"}}},
            {"operation": "upsert", "request": {"key": f"{base}-tx2", "value": 42}},
            {"operation": "delete", "request": {"key": f"{base}-deleted"}},
        ]
    }
    r = httpx.post(f"{state}/transaction", json=tx)
    assert r.status_code == 204, r.text


def read_all(url: str, keys: list[str]) -> dict[str, tuple[bytes, str, str | None]]:
    """Per key found: the bytes, the ETag and the ttlExpireTime, from GET."""
    found = {}
    for key in keys:
        r = httpx.get(f"{url}/v1.0/state/{STORE}/{key}")
        assert r.status_code in (200, 204), (key, r.status_code, r.text)
        if r.status_code == 200:
            found[key] = (r.content, r.headers["etag"], r.headers.get("metadata.ttlexpiretime"))
    return found


def bulk(url: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    r = httpx.post(f"{url}/v1.0/state/{STORE}/bulk", json={"keys": keys})
    assert r.status_code == 200, r.text
    return {entry["key"]: entry for entry in r.json()}


def guarded_writes(url: str, key: str, etag: str) -> None:
    """The writer's ETag is honoured once; then it is stale, for saves and deletes."""
    state = f"{url}/v1.0/state/{STORE}"
    assert httpx.post(state, json=[{"key": key, "value": {"v": 2}, "etag": etag}]).status_code == 204
    stale = httpx.post(state, json=[{"key": key, "value": {"v": 3}, "etag": etag}])
    assert stale.status_code == 409, stale.text
    assert httpx.delete(f"{state}/{key}", headers={"If-Match": etag}).status_code == 409
    current = httpx.get(f"{state}/{key}")
    assert current.json() == {"v": 2}
    assert httpx.delete(f"{state}/{key}", headers={"If-Match": current.headers["etag"]}).status_code == 204
    assert httpx.get(f"{state}/{key}").status_code == 204


@pytest.mark.parametrize("writer", ["daprd", "ours"])
def test_switch_between_daprd_and_ours(case: Case, writer: str, tmp_path: Path) -> None:
    base = uuid.uuid4().hex[:10]
    names = [*VALUES, "tx1", "tx2", "deleted", "binary"]
    keys = [f"{base}-{name}" for name in names]

    # Write, and note what the writer itself returns.
    if writer == "daprd":
        with daprd(case.component, tmp_path) as server:
            write_mix(server.http_url, base)
            written_at = time.monotonic()
            (saved,) = go_client(
                [{"op": "save", "store": STORE, "key": f"{base}-binary", "text": BINARY.decode()}],
                address=server.grpc_address,
            )
            assert saved["ok"], saved
            before = read_all(server.http_url, keys)
    else:
        with ours(case.component, tmp_path) as url:
            write_mix(url, base)
            written_at = time.monotonic()
        write_through_ours_store(case.component, f"{base}-binary", BINARY)
        with ours(case.component, tmp_path) as url:
            before = read_all(url, keys)
    before.pop(f"{base}-short-ttl", None)
    assert set(before) == {k for k in keys if not k.endswith(("-deleted", "-short-ttl"))}
    assert before[f"{base}-binary"][0] == BINARY
    assert orjson.loads(before[f"{base}-tx1"][0]) == {"in": "transaction"}
    if writer == "ours":  # ours keeps numbers as sent (PostgreSQL's jsonb normalises 1e3, as daprd's)
        assert before[f"{base}-large-int"][0] == VALUES["large-int"]
        assert before[f"{base}-exponent"][0] == (b"1000" if case.name == "postgresql" else b"1e3")

    # Switch: the other server opens the same database and reads everything (the short TTL over).
    time.sleep(max(0.0, written_at + 2.5 - time.monotonic()))
    reader = ours(case.component, tmp_path) if writer == "daprd" else None
    with reader if reader is not None else daprd(case.component, tmp_path) as opened:
        url = opened if isinstance(opened, str) else opened.http_url
        after = read_all(url, keys)
        assert set(after) == set(before)
        for key, (data, etag, expiry) in before.items():
            assert after[key][0] == data, key
            assert after[key][1] == etag, key  # ETags carry over
            reports_ttl = writer == "daprd" or case.daprd_reports_ttl
            if key.endswith("-long-ttl") and reports_ttl:
                assert after[key][2] is not None, key
                if expiry is not None:
                    assert after[key][2] == expiry, key
            elif not key.endswith("-short-ttl"):
                assert after[key][2] is None, key
        entries = bulk(url, [k for k in keys if not k.endswith("-binary")])
        for key, entry in entries.items():
            if key in before:
                assert entry["data"] == json.loads(before[key][0]), key
                assert entry["etag"] == before[key][1], key
            else:
                assert "data" not in entry, key
        # ETag-guarded writes on what the other wrote.
        guarded_writes(url, f"{base}-object", before[f"{base}-object"][1])
        guarded_writes(url, f"{base}-tx1", before[f"{base}-tx1"][1])
