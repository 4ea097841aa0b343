"""State encryption against a real daprd: either server reads what the other encrypted, before and after
a key rotation, on the same SQLite file or Redis server.

daprd reads its keys from a local file secret store (`auth.secretStore`); ours reads the same
`secretKeyRef`s from the environment variables the operator injects into its pods. daprd writes over
gRPC (the official Go SDK), whose SaveState encrypts the value's bytes as sent; ours writes over HTTP
(saves and a transaction) and gRPC, and every value is read through both servers' gRPC and ours' HTTP.
Values at rest are checked in the SQLite file and the Redis hash directly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fixtures.go_client import go_client
from fixtures.sidecar import run_cli, sidecar_process
from statestore_sidecar.components import secret_env_var
from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends

STORE = "store"
# Hex-encoded AES keys, as Dapr's docs have users make them (`openssl rand 16 | hexdump ...`).
KEYS = {
    "key1": "000102030405060708090a0b0c0d0e0f",  # 128 bits
    "key2": "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff",  # 256 bits
}
VALUES: dict[str, Any] = {
    "obj": {"a": 1, "nested": {"b": [1, 2.5, "é", None]}},
    "text": "hello, world",
    "big": 12345678901234567890,
    "flag": True,
}
SEALED = re.compile(rb"[A-Za-z0-9+/]+=*\|\|(key[12])")


@dataclass
class Servers:
    daprd_http: str
    daprd_grpc: str
    ours: str
    ours_grpc: str

    def ours_get(self, key: str) -> httpx.Response:
        return httpx.get(f"{self.ours}/v1.0/state/{STORE}/{key}")

    def daprd_get(self, key: str) -> bytes:
        return grpc_get(self.daprd_grpc, key)

    def ours_grpc_get(self, key: str) -> bytes:
        return grpc_get(self.ours_grpc, key)


def grpc_get(address: str, key: str) -> bytes:
    """A value's bytes through the official Go SDK's GetState."""
    (result,) = go_client([{"op": "get", "store": STORE, "key": key}], address=address)
    assert result["ok"] and result["found"], result
    return str(result["data"]).encode()


@contextlib.contextmanager
def servers(
    tmp_path: Path, phase: str, ctype: str, metadata: dict[str, str], app_id: str, *, keys: dict[str, str]
) -> Iterator[Servers]:
    """daprd and ours on one database with the same Component; `keys`: item name -> secret name."""
    workdir = tmp_path / phase
    workdir.mkdir()
    secrets_file = workdir / "secrets.json"
    secrets_file.write_text(json.dumps(KEYS))
    refs = {item: (secret, secret) for item, secret in keys.items()}
    components = [
        DaprComponent("localsecrets", "secretstores.local.file", {"secretsFile": str(secrets_file)}),
        DaprComponent(STORE, ctype, metadata, secrets=refs, secret_store="localsecrets"),
    ]
    ours_file = workdir / "ours.yaml"
    ours_file.write_text(components[1].manifest())
    env = {secret_env_var(secret, key): KEYS[secret] for secret, key in refs.values()}
    with (
        Daprd(components, workdir / "daprd", app_id=app_id) as daprd,
        sidecar_process(
            ["--app-id", app_id, "--resources-path", str(ours_file)], env, log=workdir / "ours.log"
        ) as ours,
    ):
        yield Servers(daprd.http_url, daprd.grpc_address, ours.url, ours.grpc_address)


def sqlite_raw(path: str, app_id: str) -> Callable[[str], bytes]:
    def read(key: str) -> bytes:
        with contextlib.closing(sqlite3.connect(path)) as db:
            value, is_binary = db.execute(
                "SELECT CAST(value AS BLOB), is_binary FROM state WHERE key = ?", (f"{app_id}||{key}",)
            ).fetchone()
        return base64.b64decode(value) if is_binary else bytes(value)

    return read


def redis_raw(metadata: dict[str, str], app_id: str) -> Callable[[str], bytes]:
    host, port = metadata["redisHost"].rsplit(":", 1)

    def read(key: str) -> bytes:
        client = redis.Redis(host=host, port=int(port), password=metadata.get("redisPassword") or None)
        try:
            data = client.hget(f"{app_id}||{key}", "data")
        finally:
            client.close()
        assert isinstance(data, bytes)
        return data

    return read


def assert_sealed(raw: bytes, key_name: str, value: Any) -> None:
    """The value at rest is daprd's form, labelled with the key's secret name, and no plain text."""
    match = SEALED.fullmatch(raw)
    assert match is not None, raw
    assert match.group(1).decode() == key_name
    assert json.dumps(value, ensure_ascii=False).encode() not in raw
    if isinstance(value, str):
        assert value.encode() not in raw


def exchange(run: Servers, raw: Callable[[str], bytes], tag: str, key_name: str) -> dict[str, bytes]:
    """daprd writes half the values and ours the other half; each reads all; returns key -> bytes."""
    written: dict[str, bytes] = {}
    saves = [
        {"op": "save", "store": STORE, "key": f"daprd-{tag}-{name}", "value": value}
        for name, value in VALUES.items()
    ]
    assert all(r["ok"] for r in go_client(saves, address=run.daprd_grpc))
    for name, value in VALUES.items():
        key = f"ours-{tag}-{name}"
        assert (
            httpx.post(f"{run.ours}/v1.0/state/{STORE}", json=[{"key": key, "value": value}]).status_code
            == 204
        )
        for who in ("daprd", "ours"):
            key = f"{who}-{tag}-{name}"
            ours = run.ours_get(key)
            assert ours.status_code == 200, ours.text
            assert json.loads(ours.content) == value
            assert run.daprd_get(key) == ours.content  # the same bytes from both servers
            assert run.ours_grpc_get(key) == ours.content
            assert_sealed(raw(key), key_name, value)
            written[key] = ours.content
    # Ours' gRPC SaveState encrypts as daprd's does.
    grpc_key = f"ours-{tag}-grpc"
    (saved,) = go_client(
        [{"op": "save", "store": STORE, "key": grpc_key, "value": {"via": "grpc"}}], address=run.ours_grpc
    )
    assert saved["ok"], saved
    assert run.daprd_get(grpc_key) == run.ours_get(grpc_key).content == b'{"via":"grpc"}'
    assert_sealed(raw(grpc_key), key_name, {"via": "grpc"})
    written[grpc_key] = b'{"via":"grpc"}'
    # A transaction through ours is encrypted too.
    tx_key = f"ours-{tag}-tx"
    operations = [
        {"operation": "upsert", "request": {"key": tx_key, "value": {"tx": tag}}},
        {"operation": "delete", "request": {"key": f"ours-{tag}-flag"}},
    ]
    assert (
        httpx.post(f"{run.ours}/v1.0/state/{STORE}/transaction", json={"operations": operations}).status_code
        == 204
    )
    assert run.daprd_get(tx_key) == run.ours_get(tx_key).content == b'{"tx":"%s"}' % tag.encode()
    assert_sealed(raw(tx_key), key_name, {"tx": tag})
    assert run.ours_get(f"ours-{tag}-flag").status_code == 204
    del written[f"ours-{tag}-flag"]
    written[tx_key] = run.ours_get(tx_key).content
    bulk = httpx.post(f"{run.ours}/v1.0/state/{STORE}/bulk", json={"keys": list(written)})
    assert {item["key"]: item["data"] for item in bulk.json()} == {
        k: json.loads(v) for k, v in written.items()
    }
    return written


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_each_reads_what_the_other_encrypted_across_a_rotation(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    app_id = f"enc-{uuid.uuid4().hex[:8]}"
    metadata: dict[str, str] = request.getfixturevalue(f"{backend}_metadata")
    ctype = f"state.{backend}"
    raw = (
        sqlite_raw(metadata["connectionString"], app_id)
        if backend == "sqlite"
        else redis_raw(metadata, app_id)
    )
    with servers(tmp_path, "before", ctype, metadata, app_id, keys={"primaryEncryptionKey": "key1"}) as run:
        before = exchange(run, raw, "before", "key1")

    rotated = {"primaryEncryptionKey": "key2", "secondaryEncryptionKey": "key1"}
    with servers(tmp_path, "after", ctype, metadata, app_id, keys=rotated) as run:
        for key, data in before.items():  # written with the old key: read through the secondary
            assert run.ours_get(key).content == data
            assert run.daprd_get(key) == data
            assert SEALED.fullmatch(raw(key)).group(1) == b"key1"  # type: ignore[union-attr]
        exchange(run, raw, "after", "key2")

    # Without the old key, what it encrypted cannot be read: a clear error, not garbage.
    with servers(tmp_path, "dropped", ctype, metadata, app_id, keys={"primaryEncryptionKey": "key2"}) as run:
        old = run.ours_get(next(iter(before)))
        assert old.status_code == 500 and old.json()["errorCode"] == "ERR_STATE_GET"
        assert (
            "could not decrypt data for state store store: the value was encrypted with key 'key1'"
            in old.json()["message"]
        )
        bulk = httpx.post(f"{run.ours}/v1.0/state/{STORE}/bulk", json={"keys": list(before)})
        assert bulk.status_code == 500 and bulk.json()["errorCode"] == "ERR_STATE_BULK_GET"


def test_query_over_an_encrypted_store_is_refused_as_daprd_refuses_it(tmp_path: Path) -> None:
    """daprd's state.sqlite has no query API; ours has, and refuses it with daprd's words when encrypted."""
    metadata = {"connectionString": str(tmp_path / "state.db")}
    app_id = "enc-query"
    with servers(
        tmp_path, "query", "state.sqlite", metadata, app_id, keys={"primaryEncryptionKey": "key1"}
    ) as run:
        assert (
            httpx.post(f"{run.ours}/v1.0/state/{STORE}", json=[{"key": "k", "value": {"n": 1}}]).status_code
            == 204
        )
        refused = httpx.post(f"{run.ours}/v1.0-alpha1/state/{STORE}/query", json={"filter": {"EQ": {"n": 1}}})
    assert refused.status_code == 500
    body = refused.json()
    assert (body["errorCode"], body["message"]) == (
        "ERR_STATE_QUERY",
        "state store store query failed: cannot query encrypted store",
    )


def test_daprd_encrypts_go_text_and_ours_reads_the_same_bytes(tmp_path: Path) -> None:
    """daprd 1.14's HTTP saves encrypt Go's rendering of the decoded value (`map[...]`, a string without
    its quotes), its gRPC transactions that of the bytes; ours returns exactly what daprd returns for
    such a record (docs/state-api.md)."""
    metadata = {"connectionString": str(tmp_path / "state.db")}
    with servers(
        tmp_path, "http", "state.sqlite", metadata, "enc-http", keys={"primaryEncryptionKey": "key1"}
    ) as run:
        daprd_state = f"{run.daprd_http}/v1.0/state/{STORE}"
        assert (
            httpx.post(
                daprd_state, json=[{"key": "o", "value": {"a": 1}}, {"key": "s", "value": "hi"}]
            ).status_code
            == 204
        )
        for key, shown in (("o", b"map[a:1]"), ("s", b"hi")):
            assert httpx.get(f"{daprd_state}/{key}").content == shown
            assert run.ours_get(key).content == shown
        # Its gRPC transactions encrypt Go's text of the value's bytes; its HTTP bulk get answers nothing.
        (done,) = go_client(
            [
                {
                    "op": "transaction",
                    "store": STORE,
                    "operations": [{"operation": "upsert", "key": "t", "value": "hi"}],
                }
            ],
            address=run.daprd_grpc,
        )
        assert done["ok"], done
        assert httpx.get(f"{daprd_state}/t").content == b"[34 104 105 34]" == run.ours_get("t").content
        bulk = httpx.post(f"{daprd_state}/bulk", json={"keys": ["s"]})
        assert (bulk.status_code, bulk.content) == (200, b"")
        # Ours writes the JSON value itself, which daprd's HTTP reads then return as JSON.
        assert (
            httpx.post(f"{run.ours}/v1.0/state/{STORE}", json=[{"key": "j", "value": {"a": 1}}]).status_code
            == 204
        )
        assert httpx.get(f"{daprd_state}/j").json() == {"a": 1}


def test_a_key_daprd_ignores_is_refused_by_ours(tmp_path: Path) -> None:
    """Given as a plain value in a Component naming no secret store, daprd ignores the key and stores
    plain text; ours refuses the same Component, naming the item (exit 1, one line)."""
    db = tmp_path / "state.db"
    component = DaprComponent(
        STORE, "state.sqlite", {"connectionString": str(db), "primaryEncryptionKey": KEYS["key1"]}
    )
    with Daprd([component], tmp_path / "daprd", app_id="plain") as daprd:
        assert (
            httpx.post(
                f"{daprd.http_url}/v1.0/state/{STORE}", json=[{"key": "k", "value": "visible"}]
            ).status_code
            == 204
        )
    assert sqlite_raw(str(db), "plain")("k") == b'"visible"'
    path = tmp_path / "ours.yaml"
    path.write_text(component.manifest())
    done = run_cli(["--resources-path", str(path), "--metrics-port", "0"])
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "component 'store': metadata 'primaryEncryptionKey': must be a secretKeyRef" in line
    assert KEYS["key1"] not in line
