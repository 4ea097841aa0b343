"""`state.postgresql` with `spec.version: v2`: daprd's v2 layout (`<tablePrefix>state` with `value
bytea`, a UUID `etag`, `created_at`, `updated_at`, `expires_at`), its migration bookkeeping, and the
etag, TTL and transaction rules every store follows. tests/daprd/test_switch.py shares a database
with daprd's v2 in both directions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from fixtures.backends import PostgresServer, postgres_rows, unique_name
from fixtures.stores import initialised
from statestore_sidecar import components
from statestore_sidecar import query as q
from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import (
    Concurrency,
    DeleteRequest,
    EtagMismatch,
    Feature,
    QueryError,
    SetRequest,
)
from statestore_sidecar.stores.postgresql.v2 import PostgresV2Store

V2 = schema_for("state.postgresql", "v2")


def test_v2_schema() -> None:
    assert V2.features == {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL}  # no query, as daprd's v2
    values = resolve(V2, {"connectionString": "host=x", "tablePrefix": "app_"})
    assert values["tablePrefix"] == "app_"
    with pytest.raises(MetadataError) as info:
        resolve(V2, {"connectionString": "host=x", "tableName": "t"})
    assert info.value.field == "tableName" and "v1" in str(info.value)
    with pytest.raises(MetadataError) as info:
        resolve(V2, {"connectionString": "host=x", "tablePrefix": "x; DROP TABLE y"})
    assert info.value.field == "tablePrefix"


def test_the_component_version_picks_the_schema() -> None:
    component = components.Component(
        name="s",
        type="state.postgresql",
        version="v2",
        metadata=(
            components.MetadataItem("connectionString", "host=x"),
            components.MetadataItem("tablePrefix", "p_"),
        ),
    )
    validated = components.validate(component, {"connectionString": "host=x", "tablePrefix": "p_"})
    assert validated.schema is V2


@pytest.fixture
async def v2_store(postgres_server: PostgresServer) -> AsyncIterator[PostgresV2Store]:
    metadata = {
        "connectionString": postgres_server.connection_string(),
        "tablePrefix": unique_name("p") + "_",
        "metadataTableName": unique_name("meta"),
    }
    store = create_store("state.postgresql", StoreConfig("v2", resolve(V2, metadata), "v2"))
    assert isinstance(store, PostgresV2Store)
    async with initialised(store):
        yield store


@pytest.mark.backends
async def test_values_are_stored_in_daprds_v2_layout(
    v2_store: PostgresV2Store, postgres_server: PostgresServer
) -> None:
    await v2_store.set(SetRequest("k-json", b'{ "n": 1e3 }'))
    await v2_store.set(SetRequest("k-bin", b"\x00\xff", ttl=3600))
    rows = await postgres_rows(
        postgres_server,
        f"SELECT key, value, etag::text, created_at IS NOT NULL, expires_at IS NOT NULL FROM {v2_store.table} "
        "ORDER BY key",
    )
    found = await v2_store.bulk_get(["k-json", "k-bin"])
    assert [tuple(r) for r in rows] == [
        ("k-bin", b"\x00\xff", found["k-bin"].etag, True, True),
        ("k-json", b'{ "n": 1e3 }', found["k-json"].etag, True, False),
    ]
    uuid.UUID(found["k-json"].etag)
    level_key = f"migrations-state-v2-{v2_store.prefix}"
    level = await postgres_rows(
        postgres_server, f"SELECT value FROM {v2_store.metadata_table} WHERE key = $1", level_key
    )
    assert [r[0] for r in level] == ["1"]
    index = await postgres_rows(
        postgres_server,
        "SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%(expires_at)'",
        f"{v2_store.prefix}state",
    )
    assert len(index) == 1


@pytest.mark.backends
async def test_etags_ttls_and_transactions(v2_store: PostgresV2Store) -> None:
    await v2_store.set(SetRequest("a", b"1"))
    item = await v2_store.get("a")
    assert item is not None
    await v2_store.set(SetRequest("a", b"2", etag=item.etag))
    for etag in (item.etag, "not-a-uuid"):
        with pytest.raises(EtagMismatch):
            await v2_store.set(SetRequest("a", b"3", etag=etag))
        with pytest.raises(EtagMismatch):
            await v2_store.delete(DeleteRequest("a", etag=etag))
    with pytest.raises(EtagMismatch):
        await v2_store.set(SetRequest("a", b"3", concurrency=Concurrency.FIRST_WRITE))
    with pytest.raises(EtagMismatch):
        await v2_store.transact([SetRequest("b", b"1"), SetRequest("a", b"4", etag=item.etag)])
    assert await v2_store.get("b") is None
    await v2_store.set(SetRequest("short", b"1", ttl=1))
    await asyncio.sleep(1.2)
    assert await v2_store.get("short") is None
    await v2_store.set(SetRequest("short", b"again", concurrency=Concurrency.FIRST_WRITE))
    assert await v2_store.cleanup_expired(force=True) == 0
    with pytest.raises(QueryError):
        await v2_store.query(q.parse({}), "")
