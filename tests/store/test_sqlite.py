"""`state.sqlite` specifics: metadata, files, locking between processes, and queries run in SQL.

The shared behaviour is in test_conformance.py; here the store is also compared with the in-memory
reference store on random documents and queries, since both must answer queries identically.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from fixtures.stores import read_before_expiry
from statestore_sidecar import query as q
from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import (
    BackendUnavailable,
    Concurrency,
    DeleteRequest,
    EtagMismatch,
    Feature,
    SetRequest,
    StoreError,
)
from statestore_sidecar.stores.memory import metadata as memory_metadata
from statestore_sidecar.stores.memory import store as memory
from statestore_sidecar.stores.sqlite import functions
from statestore_sidecar.stores.sqlite import metadata as sqlite_metadata
from statestore_sidecar.stores.sqlite import store as sq
from statestore_sidecar.stores.sqlite.dialect import build_query, prefix_end


def js(value: object) -> bytes:
    return orjson.dumps(value)


@asynccontextmanager
async def open_store(metadata: Mapping[str, str], name: str = "sqlite") -> AsyncIterator[sq.SQLiteStore]:
    store = sq.create(StoreConfig(name, resolve(sqlite_metadata.SCHEMA, metadata)))
    await store.init()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def memory_store() -> AsyncIterator[memory.MemoryStore]:
    store = memory.create(StoreConfig("memory", resolve(memory_metadata.SCHEMA, {})))
    await store.init()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def rows(path: Path, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """Read the database file with a connection of its own, as an operator would with sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# --- metadata -------------------------------------------------------------------------------


def test_schema_is_registered_with_dapr_names() -> None:
    assert schema_for("state.sqlite") is sqlite_metadata.SCHEMA
    assert schema_for("state.sqlite3") is sqlite_metadata.SCHEMA
    assert sqlite_metadata.SCHEMA.features == {
        Feature.ETAG,
        Feature.TRANSACTIONAL,
        Feature.TTL,
        Feature.QUERY_API,
    }
    assert not sqlite_metadata.SCHEMA.unsupported


def test_metadata_defaults_and_aliases() -> None:
    values = resolve(sqlite_metadata.SCHEMA, {"connectionString": "x.db"})
    assert values["tableName"] == "state"
    assert values["metadataTableName"] == "metadata"
    assert values["timeout"] == 20.0
    assert values["busyTimeout"] == 2.0
    assert values["cleanupInterval"] == 0.0
    assert values["disableWAL"] is False
    aliased = resolve(
        sqlite_metadata.SCHEMA,
        {"url": "x.db", "timeoutInSeconds": "30", "cleanupIntervalInSeconds": "5", "disableWAL": "true"},
    )
    assert aliased["connectionString"] == "x.db"
    assert aliased["timeout"] == 30.0
    assert aliased["cleanupInterval"] == 5.0
    assert aliased["disableWAL"] is True
    assert resolve(sqlite_metadata.SCHEMA, {"url": "x", "busyTimeout": "1m30s"})["busyTimeout"] == 90.0


@pytest.mark.parametrize(
    ("metadata", "field", "reason"),
    [
        ({}, "connectionString", "required"),
        ({"connectionString": "  "}, "connectionString", "required"),
        ({"connectionString": "a.db", "url": "b.db"}, "url", "same setting"),
        ({"connectionString": "a.db", "tableName": "state; DROP TABLE x"}, "tableName", "must match"),
        ({"connectionString": "a.db", "tableName": 'st"ate'}, "tableName", "must match"),
        ({"connectionString": "a.db", "tableName": "my.state"}, "tableName", "must match"),
        ({"connectionString": "a.db", "tableName": ""}, "tableName", "must match"),
        ({"connectionString": "a.db", "tableName": "sqlite_master"}, "tableName", "must match"),
        ({"connectionString": "a.db", "metadataTableName": "meta-data"}, "metadataTableName", "must match"),
        ({"connectionString": "a.db", "timeout": "soon"}, "timeout", "not a duration"),
        ({"connectionString": "a.db", "timeout": "500ms"}, "timeout", "minimum"),
        ({"connectionString": "a.db", "timeoutInSeconds": "0"}, "timeoutInSeconds", "minimum"),
        ({"connectionString": "a.db", "busyTimeout": "2 seconds"}, "busyTimeout", "not a duration"),
        ({"connectionString": "a.db", "cleanupInterval": "1d"}, "cleanupInterval", "not a duration"),
        ({"connectionString": "a.db", "disableWAL": "maybe"}, "disableWAL", "not a boolean"),
    ],
)
def test_metadata_errors_name_the_field(metadata: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(MetadataError) as info:
        resolve(sqlite_metadata.SCHEMA, metadata)
    assert info.value.field == field
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("?_pragma=journal_mode(DELETE)", "disableWAL"),
        ("?_pragma=busy_timeout(10)", "busyTimeout"),
        ("?_pragma=synchronous(normal);DROP", "of the form"),
        ("?_txlock=sometimes", "_txlock"),
    ],
)
def test_connection_string_options_that_are_refused(db: Path, suffix: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message) as info:
        resolve(sqlite_metadata.SCHEMA, {"connectionString": f"file:{db}{suffix}"})
    assert info.value.field == "connectionString"


async def test_connection_string_pragmas_and_uri_parameters_apply(db: Path) -> None:
    cs = (
        f"file:{db}?_pragma=synchronous(normal)&_pragma=cache_size(-4000)&_pragma=user_version(7)"
        "&_txlock=immediate&psow=1"
    )
    async with open_store({"connectionString": cs}) as store:
        await store.set(SetRequest("k", js(1)))
    assert rows(db, "PRAGMA user_version") == [(7,)]  # kept in the file: the pragmas ran
    assert rows(db, "SELECT key FROM state") == [("k",)]


async def test_plain_path_with_query_parameters_becomes_a_uri(tmp_path: Path) -> None:
    path = tmp_path / "with space#and%.db"
    async with open_store({"connectionString": f"{path}?_pragma=synchronous(normal)"}) as store:
        await store.set(SetRequest("k", js(1)))
    assert path.exists()
    assert rows(path, "SELECT key FROM state") == [("k",)]


@pytest.mark.parametrize(
    ("cs", "database", "uri", "in_memory", "read_only"),
    [
        ("/data/state.db", "/data/state.db", False, False, False),
        ("state.db", "state.db", False, False, False),
        (":memory:", ":memory:", False, True, False),
        (":memory:?_pragma=synchronous(off)", ":memory:", False, True, False),
        (":memory:?psow=1", "file:?psow=1&mode=memory", True, True, False),
        ("file::memory:?cache=shared", "file::memory:?cache=shared", True, True, False),
        ("file:/d/x.db?mode=ro&_txlock=immediate", "file:/d/x.db?mode=ro", True, False, True),
        ("file:/d/x.db?immutable=1&cache=shared", "file:/d/x.db?immutable=1", True, False, True),
        ("/d/a b.db?_pragma=synchronous(normal)", "/d/a b.db", False, False, False),
        ("/d/a b#%.db?psow=1", "file:/d/a%20b%23%25.db?psow=1", True, False, False),
        ("/d/x.db?vfs=unix-dotfile", "file:/d/x.db?vfs=unix-dotfile", True, False, False),
    ],
)
def test_connection_string_forms(cs: str, database: str, uri: bool, in_memory: bool, read_only: bool) -> None:
    target = sqlite_metadata.parse_connection_string(cs)
    assert (target.database, target.uri, target.in_memory, target.read_only) == (
        database,
        uri,
        in_memory,
        read_only,
    )


async def test_shared_cache_is_not_used_for_files(db: Path) -> None:
    async with open_store({"connectionString": f"file:{db}?cache=shared"}) as store:
        await asyncio.gather(
            *(store.set(SetRequest(f"k{i}", js(i))) for i in range(100)),
            *(store.get(f"k{i}") for i in range(100)),
            *(store.query(q.parse({"filter": {"GT": {"x": 1}}}), "") for _ in range(20)),
        )
        assert len(await store.bulk_get([f"k{i}" for i in range(100)])) == 100


async def test_unopenable_path_is_backend_unavailable(tmp_path: Path) -> None:
    # A file where a folder should be: neither the folder nor the database can be made.
    (tmp_path / "a-file").write_text("")
    store = sq.create(
        StoreConfig(
            "s", resolve(sqlite_metadata.SCHEMA, {"connectionString": str(tmp_path / "a-file" / "x.db")})
        )
    )
    with pytest.raises(BackendUnavailable, match="SQLite database"):
        await store.init()
    with pytest.raises(BackendUnavailable):
        await store.get("k")
    await store.close()


async def test_a_file_that_is_not_a_database_is_backend_unavailable(db: Path) -> None:
    await asyncio.to_thread(db.write_bytes, b"this is not an SQLite database, just some text " * 100)
    store = sq.create(StoreConfig("s", resolve(sqlite_metadata.SCHEMA, {"connectionString": str(db)})))
    with pytest.raises(BackendUnavailable, match="not a database"):
        await store.init()
    await store.close()


def test_same_table_for_state_and_metadata_is_refused(db: Path) -> None:
    md = {"connectionString": str(db), "tableName": "t", "metadataTableName": "t"}
    with pytest.raises(MetadataError, match="different tables"):
        resolve(sqlite_metadata.SCHEMA, md)


# --- files, memory, layout ------------------------------------------------------------------


@pytest.mark.parametrize("cs", [":memory:", "file::memory:", "file:memdb1?mode=memory&cache=shared"])
async def test_in_memory_database_uses_one_shared_connection(cs: str) -> None:
    async with open_store({"connectionString": cs}) as store:
        await store.set(SetRequest("a||1", js({"n": 1})))
        await asyncio.gather(*(store.set(SetRequest(f"a||{i}", js({"n": i}))) for i in range(2, 30)))
        await store.transact([SetRequest("a||x", js({"n": 100})), DeleteRequest("a||1")])
        assert await store.get("a||1") is None
        item = await store.get("a||x")
        assert item is not None and item.data == js({"n": 100})
        page = await store.query(q.parse({"filter": {"GTE": {"n": 28}}}), "a||")
        assert [i.key for i in page.items] == ["a||28", "a||29", "a||x"]
        assert len(await store.bulk_get([f"a||{i}" for i in range(40)])) == 28


async def test_two_memory_stores_are_separate() -> None:
    async with (
        open_store({"connectionString": ":memory:"}) as one,
        open_store({"connectionString": ":memory:"}) as two,
    ):
        await one.set(SetRequest("k", js(1)))
        assert await two.get("k") is None


async def test_file_persists_across_close_and_reopen(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        await store.set(SetRequest("plain", js({"a": 1})))
        await store.set(SetRequest("ttl", js("later"), ttl=3600))
        await store.set(SetRequest("bytes", b"\xff\x00\x01"))
        before = await store.bulk_get(["plain", "ttl", "bytes"])
    async with open_store({"connectionString": str(db)}) as store:
        after = await store.bulk_get(["plain", "ttl", "bytes"])
        assert after == before
        assert after["ttl"].expires_at is not None
        assert abs(after["ttl"].expires_at - (time.time() + 3600)) < 60
        # The etag read before the restart still guards writes.
        await store.set(SetRequest("plain", js({"a": 2}), etag=before["plain"].etag))
        with pytest.raises(EtagMismatch):
            await store.set(SetRequest("plain", js({"a": 3}), etag=before["plain"].etag))


async def test_layout_is_daprs(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        await store.set(SetRequest("json", js({"x": "ü"})))
        await store.set(SetRequest("bytes", b"\x01\xff"))
        await store.set(SetRequest("nul", b'"a\x00b"'))
        await store.set(SetRequest("ttl", js(1), ttl=100))
    columns = [r[1] for r in rows(db, "PRAGMA table_info(state)")]
    assert columns == ["key", "value", "is_binary", "etag", "expiration_time", "update_time"]
    assert rows(db, "SELECT value FROM metadata WHERE key = 'migrations'") == [("1",)]
    stored = dict((k, (v, b)) for k, v, b in rows(db, "SELECT key, value, is_binary FROM state"))
    assert stored["json"] == ('{"x":"ü"}', 0)
    assert stored["bytes"] == ("Af8=", 1)  # base64, as Dapr stores bytes
    assert stored["nul"][1] == 1
    ((expires,),) = rows(db, "SELECT expiration_time FROM state WHERE key = 'ttl'")
    # Comparable with SQLite's own CURRENT_TIMESTAMP, as Dapr's statements compare it.
    assert rows(db, "SELECT ? > CURRENT_TIMESTAMP", (expires,)) == [(1,)]
    assert rows(db, "SELECT unixepoch(?) - unixepoch('now') BETWEEN 95 AND 101", (expires,)) == [(1,)]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]


async def test_disable_wal_uses_a_rollback_journal(db: Path) -> None:
    async with open_store({"connectionString": str(db), "disableWAL": "true"}) as store:
        await store.set(SetRequest("k", js(1)))
    assert rows(db, "PRAGMA journal_mode") == [("delete",)]


async def test_reads_a_database_written_by_dapr(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE metadata (key text NOT NULL PRIMARY KEY, value text NOT NULL);
        INSERT INTO metadata VALUES ('migrations', '1');
        CREATE TABLE state (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL, is_binary BOOLEAN NOT NULL,
            etag TEXT NOT NULL, expiration_time TIMESTAMP DEFAULT NULL,
            update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
        INSERT INTO state VALUES ('app||json', '{"n":1}', 0, 'e1', NULL, CURRENT_TIMESTAMP);
        INSERT INTO state VALUES ('app||bin', 'AQL/', 1, 'e2', NULL, CURRENT_TIMESTAMP);
        INSERT INTO state VALUES ('app||ttl', '2', 0, 'e3', DATETIME(CURRENT_TIMESTAMP, '+60 seconds'),
            CURRENT_TIMESTAMP);
        INSERT INTO state VALUES ('app||gone', '3', 0, 'e4', DATETIME(CURRENT_TIMESTAMP, '-1 seconds'),
            CURRENT_TIMESTAMP);
        """
    )
    conn.commit()
    conn.close()
    async with open_store({"connectionString": str(db)}) as store:
        found = await store.bulk_get(["app||json", "app||bin", "app||ttl", "app||gone"])
        assert set(found) == {"app||json", "app||bin", "app||ttl"}
        assert found["app||json"].data == b'{"n":1}' and found["app||json"].etag == "e1"
        assert found["app||bin"].data == b"\x01\x02\xff"
        expires = found["app||ttl"].expires_at
        assert expires is not None and 55 < expires - time.time() <= 61
        await store.set(SetRequest("app||json", js(2), etag="e1"))
        # An expired row, not yet cleaned up, is absent for first-write.
        await store.set(SetRequest("app||gone", js(4), concurrency=Concurrency.FIRST_WRITE))


# --- etags, TTL and cleanup -----------------------------------------------------------------


async def test_expired_rows_are_absent_for_every_etag_rule(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        item = await read_before_expiry(store, "k", js(1))
        assert item.expires_at is not None
        await asyncio.sleep(max(0.0, item.expires_at - time.time()) + 0.1)
        assert rows(db, "SELECT count(*) FROM state") == [(1,)]  # no cleanup configured
        assert await store.get("k") is None
        with pytest.raises(EtagMismatch):
            await store.set(SetRequest("k", js(2), etag=item.etag))
        with pytest.raises(EtagMismatch):
            await store.delete(DeleteRequest("k", etag=item.etag))
        await store.set(SetRequest("k", js(3), concurrency=Concurrency.FIRST_WRITE))
        fresh = await store.get("k")
        assert fresh is not None and fresh.data == js(3) and fresh.expires_at is None
        with pytest.raises(EtagMismatch):
            await store.set(SetRequest("k", js(4), concurrency=Concurrency.FIRST_WRITE))
        # Deletes without an etag, with first-write, behave like last-write.
        await store.delete(DeleteRequest("k", concurrency=Concurrency.FIRST_WRITE))
        assert await store.get("k") is None


async def test_cleanup_interval_deletes_expired_rows(db: Path) -> None:
    async with open_store({"connectionString": str(db), "cleanupInterval": "300ms"}) as store:
        await store.transact(
            [SetRequest(f"short-{i}", js(i), ttl=1) for i in range(50)]
            + [SetRequest("long", js(0), ttl=3600), SetRequest("forever", js(0))]
        )
        assert rows(db, "SELECT count(*) FROM state") == [(52,)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if rows(db, "SELECT count(*) FROM state") == [(2,)]:
                break
        assert sorted(rows(db, "SELECT key FROM state")) == [("forever",), ("long",)]
        ((last,),) = rows(db, "SELECT value FROM metadata WHERE key = 'last-cleanup'")
        assert rows(db, "SELECT (julianday('now') - julianday(?)) * 86400 < 5", (last,)) == [(1,)]


async def test_without_cleanup_expired_rows_stay_but_are_never_read(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        await store.set(SetRequest("a||k", js({"v": 1}), ttl=1))
        await asyncio.sleep(1.5)
        assert await store.get("a||k") is None
        assert await store.bulk_get(["a||k"]) == {}
        assert (await store.query(q.parse({}), "a||")).items == []
        assert rows(db, "SELECT count(*) FROM state") == [(1,)]


async def test_cleanup_is_shared_between_processes(db: Path) -> None:
    md = {"connectionString": str(db), "cleanupInterval": "1h"}
    async with open_store(md) as one, open_store(md) as two:
        await one.set(SetRequest("k", js(1), ttl=1))
        await asyncio.sleep(1.1)
        assert await one.cleanup_expired() == 1
        await one.set(SetRequest("j", js(1), ttl=1))
        await asyncio.sleep(1.1)
        # Another instance cleaned less than an interval ago: this one leaves it.
        assert await two.cleanup_expired() == 0
        assert rows(db, "SELECT key FROM state") == [("j",)]


async def test_binary_and_text_values_round_trip_exactly(db: Path) -> None:
    values = [b"", b"\x00", b"\xff\xfe", b"plain text, not JSON", '"ünï\\u0000"'.encode(), b"[1, 2 ,3]  "]
    async with open_store({"connectionString": str(db)}) as store:
        for i, value in enumerate(values):
            await store.set(SetRequest(f"v{i}", value))
        found = await store.bulk_get([f"v{i}" for i in range(len(values))])
        assert [found[f"v{i}"].data for i in range(len(values))] == values
        await store.transact([SetRequest(f"t{i}", value) for i, value in enumerate(values)])
        for i, value in enumerate(values):
            item = await store.get(f"t{i}")
            assert item is not None and item.data == value


# --- concurrency between processes ----------------------------------------------------------


async def test_two_instances_increment_without_losing_updates_or_seeing_locks(db: Path) -> None:
    md = {"connectionString": str(db)}
    async with open_store(md, "one") as one, open_store(md, "two") as two:
        await one.set(SetRequest("counter", js(0)))
        errors: list[BaseException] = []

        async def client(store: sq.SQLiteStore, n: int) -> None:
            for _ in range(n):
                while True:
                    try:
                        item = await store.get("counter")
                        assert item is not None
                        await store.set(
                            SetRequest("counter", js(orjson.loads(item.data) + 1), etag=item.etag)
                        )
                        break
                    except EtagMismatch:
                        await asyncio.sleep(0)
                    except StoreError as exc:  # "database is locked" would land here
                        errors.append(exc)
                        raise

        await asyncio.gather(*(client(store, 25) for store in (one, two) for _ in range(4)))
        assert errors == []
        item = await two.get("counter")
        assert item is not None and orjson.loads(item.data) == 200


WORKER = textwrap.dedent(
    """
    import asyncio, sys, orjson
    from statestore_sidecar.schema import resolve
    from statestore_sidecar.stores import StoreConfig
    from statestore_sidecar.stores.sqlite import metadata as sqlite_metadata, store as sq
    from statestore_sidecar.stores.base import EtagMismatch, SetRequest

    async def main(path, n):
        store = sq.create(StoreConfig("w", resolve(sqlite_metadata.SCHEMA, {"connectionString": path})))
        await store.init()
        async def client():
            for _ in range(n):
                while True:
                    item = await store.get("counter")
                    try:
                        await store.set(SetRequest("counter", orjson.dumps(orjson.loads(item.data) + 1),
                                                   etag=item.etag))
                        break
                    except EtagMismatch:
                        await asyncio.sleep(0)
        try:
            await asyncio.gather(*(client() for _ in range(4)))
            await store.transact([SetRequest(f"done-{sys.argv[3]}-{i}", b"1") for i in range(200)])
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_worker_processes_share_one_file(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        await store.set(SetRequest("counter", js(0)))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(db), "30", str(i), stderr=subprocess.PIPE
        )
        for i in range(3)
    ]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 240)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr.decode()
        assert b"locked" not in stderr
    async with open_store({"connectionString": str(db)}) as store:
        item = await store.get("counter")
        assert item is not None and orjson.loads(item.data) == 3 * 4 * 30
        assert len(await store.bulk_get([f"done-{p}-{i}" for p in range(3) for i in range(200)])) == 600


async def test_waits_for_another_connections_lock_within_busy_timeout(db: Path) -> None:
    async with open_store({"connectionString": str(db), "busyTimeout": "15s"}) as store:
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO state VALUES ('x', '1', 0, 'e', NULL, CURRENT_TIMESTAMP)")
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, lambda: other.execute("COMMIT"))
        started = time.monotonic()
        await store.set(SetRequest("k", js(1)))
        assert 0.4 < time.monotonic() - started < 15
        assert await store.get("x") is not None
        other.close()


async def test_lock_held_past_busy_timeout_is_backend_unavailable(db: Path) -> None:
    async with open_store({"connectionString": str(db), "busyTimeout": "300ms"}) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"locked .*busyTimeout \(0.3s\)"):
            await store.transact([SetRequest("a", js(1)), SetRequest("b", js(2))])
        assert time.monotonic() - started >= 0.29
        # Readers are not blocked by a writer in WAL mode.
        assert await store.get("a") is None
        other.execute("ROLLBACK")
        other.close()
        await store.transact([SetRequest("a", js(1)), SetRequest("b", js(2))])


async def test_waiting_for_a_lock_ends_at_the_timeout(db: Path) -> None:
    async with open_store({"connectionString": str(db), "timeout": "1s", "busyTimeout": "30s"}) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.set(SetRequest("k", js(1)))
        assert time.monotonic() - started < 10
        other.execute("ROLLBACK")
        other.close()


async def test_instances_starting_together_on_a_new_file(db: Path) -> None:
    stores = [
        sq.create(StoreConfig(f"s{i}", resolve(sqlite_metadata.SCHEMA, {"connectionString": str(db)})))
        for i in range(6)
    ]
    try:
        await asyncio.gather(*(s.init() for s in stores))
        await asyncio.gather(*(s.set(SetRequest(f"k{i}", js(i))) for i, s in enumerate(stores)))
        assert len(await stores[0].bulk_get([f"k{i}" for i in range(6)])) == 6
    finally:
        for s in stores:
            await s.close()
    assert rows(db, "SELECT value FROM metadata WHERE key = 'migrations'") == [("1",)]


async def test_operations_are_interrupted_at_the_timeout(db: Path) -> None:
    async with open_store({"connectionString": str(db), "timeout": "1s"}) as store:
        # Values with escapes are searched by Python functions: sorting a million takes many seconds.
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "INSERT INTO state (key, value, is_binary, etag) VALUES (?, ?, 0, 'e')",
                ((f"a||{i}", json.dumps({"n": i, "s": "\\"})) for i in range(1_000_000)),
            )
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="within 1s"):
            await store.query(q.parse({"sort": [{"key": "n"}]}), "a||")
        assert 0.9 < time.monotonic() - started < 10
        await store.ping()  # the connection is usable again
        await store.set(SetRequest("k", js(1)))


def random_script(rng: random.Random, steps: int) -> list[tuple[str, int]]:
    kinds = ["get", "set", "set_etag", "set_bad", "first", "del", "del_etag", "tx_ok", "tx_fail"]
    return [(rng.choice(kinds), rng.randint(0, 999)) for _ in range(steps)]


async def play(store: Any, worker: int, script: list[tuple[str, int]]) -> list[object]:
    """Run one worker's script on its own keys; the outcomes, comparable between stores."""
    key, aux = f"w{worker}", f"w{worker}-aux"
    etag = "none-yet"
    outcomes: list[object] = []
    for kind, n in script:
        try:
            match kind:
                case "get":
                    item = await store.get(key)
                    etag = item.etag if item else "none"
                    outcomes.append(item.data if item else None)
                    continue
                case "set":
                    await store.set(SetRequest(key, js(n)))
                case "set_etag":
                    await store.set(SetRequest(key, js(n), etag=etag))
                case "set_bad":
                    await store.set(SetRequest(key, js(n), etag="bad-etag"))
                case "first":
                    await store.set(SetRequest(key, js(n), concurrency=Concurrency.FIRST_WRITE))
                case "del":
                    await store.delete(DeleteRequest(key))
                case "del_etag":
                    await store.delete(DeleteRequest(key, etag=etag))
                case "tx_ok":
                    await store.transact([SetRequest(aux, js(n)), SetRequest(key, js(n)), DeleteRequest(aux)])
                case "tx_fail":
                    await store.transact([SetRequest(aux, js(n)), SetRequest(key, js(n), etag="bad-etag")])
            outcomes.append("ok")
        except EtagMismatch:
            outcomes.append("mismatch")
    found = await store.bulk_get([key, aux])
    outcomes.append({k: v.data for k, v in found.items()})
    return outcomes


async def test_group_commit_keeps_every_write_independent(db: Path) -> None:
    rng = random.Random(7)
    scripts = [random_script(rng, 60) for _ in range(40)]
    async with open_store({"connectionString": str(db)}) as store, memory_store() as reference:
        # Forty workers at once: their writes share transactions; each must see only its own effects.
        got = await asyncio.gather(*(play(store, w, s) for w, s in enumerate(scripts)))
        want = [await play(reference, w, s) for w, s in enumerate(scripts)]
        assert got == want
        assert {"mismatch", "ok"} <= {o for outcomes in got for o in outcomes if isinstance(o, str)}


async def test_cancelled_writes_leave_the_writer_working(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        tasks = [asyncio.create_task(store.set(SetRequest(f"c{i}", js(i)))) for i in range(300)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        found = await store.bulk_get([f"c{i}" for i in range(300)])
        for i, result in enumerate(results):
            if result is None:
                assert found[f"c{i}"].data == js(i)
            else:
                assert isinstance(result, asyncio.CancelledError)
        await store.transact([SetRequest("after", js(1)), SetRequest("after-2", js(2))])
        assert len(await store.bulk_get(["after", "after-2"])) == 2


async def test_failed_transaction_leaves_nothing_and_the_lock_free(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        with pytest.raises(EtagMismatch):
            await store.transact([SetRequest("a", js(1)), SetRequest("b", js(2), etag="nope")])
        assert rows(db, "SELECT count(*) FROM state") == [(0,)]
        other = sqlite3.connect(db, timeout=0.1)
        other.execute("BEGIN IMMEDIATE")  # would fail if the store still held the write lock
        other.rollback()
        other.close()


# --- queries --------------------------------------------------------------------------------


async def keys_of(store: Any, body: object, prefix: str = "") -> list[str]:
    page = await store.query(q.parse(body), prefix)
    return [item.key.removeprefix(prefix) for item in page.items]


DOCS: dict[str, bytes] = {
    "ann": js({"name": "Ann", "age": 31, "person": {"org": "Dev Ops", "id": 1036}, "vip": True}),
    "bob": js(
        {"name": "Bob", "age": 25.5, "person": {"org": "Finance", "id": 1}, "vip": False, "tags": ["a"]}
    ),
    "cy": js({"name": "Cy", "age": "31", "person": {"org": "Dev Ops"}, "vip": None}),
    "dee": js({"name": "Dée", "age": 40, "person": {"org": {"nested": 1}}}),
    "eve": json.dumps(
        {"name": 'Eve "E"', "age": 7, "person": {"org": "Hr", "id": 2}}, ensure_ascii=True
    ).encode(),
    "odd": js({'q"uote': 1, "back\\slash": 2, "sp ace": 3, "ünï": 4, "a[0]": 5, "$": 6, "new\nline": 7}),
    "esc": b'{"\\u0061ge": 12, "n\\u0061me": "Esc"}',  # escaped keys: age and name
    "scalar": js(31),
    "string": js("Dev Ops"),
    "list": js([{"age": 31}]),
    "text": b"not json at all",
    "binary": b"\xff\x00",
}


@pytest.fixture
async def loaded(db: Path) -> AsyncIterator[tuple[sq.SQLiteStore, memory.MemoryStore]]:
    async with open_store({"connectionString": str(db)}) as store, memory_store() as reference:
        for s in (store, reference):
            await s.transact([SetRequest(f"p||{k}", v) for k, v in DOCS.items()])
            await s.set(SetRequest("other||ann", DOCS["ann"]))
        yield store, reference


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"EQ": {"name": "Ann"}}, ["ann"]),
        ({"EQ": {"person.org": "Dev Ops"}}, ["ann", "cy"]),
        ({"EQ": {"person.org.nested": 1}}, ["dee"]),
        ({"EQ": {"age": 31}}, ["ann"]),
        ({"EQ": {"age": 31.0}}, ["ann"]),
        ({"EQ": {"age": "31"}}, ["cy"]),
        ({"EQ": {"vip": True}}, ["ann"]),
        ({"EQ": {"vip": False}}, ["bob"]),
        ({"EQ": {"vip": None}}, ["cy"]),
        ({"EQ": {"vip": 1}}, []),
        ({"NEQ": {"vip": True}}, ["bob", "cy"]),
        ({"NEQ": {"age": 31}}, ["bob", "cy", "dee", "esc", "eve"]),
        ({"NEQ": {"person.id": 1}}, ["ann", "eve"]),
        ({"GT": {"age": 25.5}}, ["ann", "dee"]),
        ({"GTE": {"age": 25.5}}, ["ann", "bob", "dee"]),
        ({"LT": {"age": 25.5}}, ["esc", "eve"]),
        ({"LTE": {"age": 12}}, ["esc", "eve"]),
        ({"GT": {"name": "Cy"}}, ["dee", "esc", "eve"]),
        ({"LT": {"name": "Bob"}}, ["ann"]),
        ({"GTE": {"person.org": "Finance"}}, ["bob", "eve"]),
        ({"IN": {"age": [31, "31", 7]}}, ["ann", "cy", "eve"]),
        ({"IN": {"vip": [None, False]}}, ["bob", "cy"]),
        ({"IN": {"name": ["Dée", 'Eve "E"', "Esc"]}}, ["dee", "esc", "eve"]),
        ({"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"GT": {"age": 30}}]}, ["ann"]),
        (
            {"OR": [{"EQ": {"name": "Bob"}}, {"AND": [{"GTE": {"age": 40}}, {"LT": {"age": 41}}]}]},
            ["bob", "dee"],
        ),
        ({"EQ": {'q"uote': 1}}, ["odd"]),
        ({"EQ": {"back\\slash": 2}}, ["odd"]),
        ({"EQ": {"sp ace": 3}}, ["odd"]),
        ({"EQ": {"ünï": 4}}, ["odd"]),
        ({"EQ": {"a[0]": 5}}, ["odd"]),
        ({"EQ": {"$": 6}}, ["odd"]),
        ({"EQ": {"new\nline": 7}}, ["odd"]),
        ({"EQ": {"tags": "a"}}, []),
        ({"EQ": {"missing.path": None}}, []),
    ],
)
async def test_query_operators_and_paths(
    loaded: tuple[sq.SQLiteStore, memory.MemoryStore], flt: dict[str, object], expected: list[str]
) -> None:
    store, reference = loaded
    body = {"filter": flt}
    assert await keys_of(store, body, "p||") == expected
    assert await keys_of(reference, body, "p||") == expected


async def test_query_without_filter_lists_json_values_only(
    loaded: tuple[sq.SQLiteStore, memory.MemoryStore],
) -> None:
    store, reference = loaded
    expected = sorted(k for k in DOCS if k not in ("text", "binary"))
    assert await keys_of(store, {}, "p||") == expected
    assert await keys_of(reference, {}, "p||") == expected


async def test_values_that_are_not_objects_never_match_a_filter(
    loaded: tuple[sq.SQLiteStore, memory.MemoryStore],
) -> None:
    store, _ = loaded
    for flt in ({"NEQ": {"x": 1}}, {"NEQ": {"age": "nothing"}}, {"LT": {"age": 1000}}, {"GTE": {"0.age": 0}}):
        found = await keys_of(store, {"filter": flt}, "p||")
        assert not {"scalar", "string", "list", "text", "binary"} & set(found), flt


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ([{"key": "age"}], ["odd", "eve", "esc", "bob", "ann", "dee", "cy"]),
        ([{"key": "age", "order": "DESC"}], ["cy", "dee", "ann", "bob", "esc", "eve", "odd"]),
        (
            [{"key": "vip"}, {"key": "name", "order": "DESC"}],
            ["eve", "esc", "dee", "cy", "odd", "bob", "ann"],
        ),
        ([{"key": "vip", "order": "DESC"}, {"key": "age"}], ["ann", "bob", "odd", "eve", "esc", "dee", "cy"]),
        (
            [{"key": "person.org"}, {"key": "person.id", "order": "DESC"}],
            ["esc", "odd", "ann", "cy", "bob", "eve", "dee"],
        ),
    ],
)
async def test_query_sorts_across_types(
    loaded: tuple[sq.SQLiteStore, memory.MemoryStore], sort: list[dict[str, str]], expected: list[str]
) -> None:
    store, reference = loaded
    body = {"sort": sort}
    objects = [k for k in await keys_of(reference, body, "p||") if k not in ("scalar", "string", "list")]
    assert objects == expected
    assert await keys_of(store, body, "p||") == await keys_of(reference, body, "p||")


async def test_query_pages_with_offset_tokens(loaded: tuple[sq.SQLiteStore, memory.MemoryStore]) -> None:
    store, _ = loaded
    everything = await keys_of(store, {"sort": [{"key": "age", "order": "DESC"}]}, "p||")
    pages: list[list[str]] = []
    token: str | None = None
    while True:
        body: dict[str, object] = {"sort": [{"key": "age", "order": "DESC"}], "page": {"limit": 4}}
        if token:
            body["page"] = {"limit": 4, "token": token}
        page = await store.query(q.parse(body), "p||")
        if not page.items:
            assert page.token == token  # an empty page still says where it is
            break
        assert page.token == str(sum(map(len, pages)) + len(page.items))
        pages.append([i.key.removeprefix("p||") for i in page.items])
        token = page.token
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [k for p in pages for k in p] == everything
    unlimited = await store.query(q.parse({"page": {"token": "3"}}), "p||")
    assert unlimited.token is None and len(unlimited.items) == len(everything) - 3
    with pytest.raises(StoreError):
        await store.query(q.parse({"page": {"limit": 1, "token": str(2**70)}}), "p||")


async def test_query_is_restricted_to_the_prefix(db: Path) -> None:
    keys = ["a||x", "a||", "a|", "a|}", "a||\U0010ffff", "a||\U0010ffff\U0010ffff", "b||x", "a", "a||\ud7ff"]

    async def listed(prefix: str) -> list[str]:
        return [item.key for item in (await store.query(q.parse({}), prefix)).items]

    async with open_store({"connectionString": str(db)}) as store:
        await store.transact([SetRequest(k, js({"k": k})) for k in keys])
        assert await listed("a||") == sorted(k for k in keys if k.startswith("a||"))
        assert await listed("a||\U0010ffff") == ["a||\U0010ffff", "a||\U0010ffff\U0010ffff"]
        assert await listed("\U0010ffff") == []
        assert await listed("a|") == sorted(k for k in keys if k.startswith("a|"))
        assert await listed("") == sorted(keys)
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\ud7ff") == "\ue000"
    assert prefix_end("\U0010ffff") is None


async def test_query_results_carry_the_stored_bytes_and_etag(db: Path) -> None:
    value = b'{ "spaced" : [1, 2],  "x": "\\u00fc" }'
    async with open_store({"connectionString": str(db)}) as store:
        await store.set(SetRequest("p||k", value))
        item = await store.get("p||k")
        page = await store.query(q.parse({"filter": {"EQ": {"x": "ü"}}}), "p||")
        assert [(i.key, i.data, i.etag) for i in page.items] == [("p||k", value, item.etag if item else None)]


async def test_query_over_twenty_thousand_rows_runs_in_sql(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        await store.transact(
            [
                SetRequest(f"big||{i:05d}", js({"n": i, "group": {"g": i % 7}, "name": f"item-{i}"}))
                for i in range(20_000)
            ]
        )
        body = {
            "filter": {"AND": [{"EQ": {"group.g": 3}}, {"GTE": {"n": 1000}}]},
            "sort": [{"key": "n", "order": "DESC"}],
            "page": {"limit": 5, "token": "10"},
        }
        query = q.parse(body)
        sql, params = build_query("state", query, "big||", time.time())
        assert "json_extract(value" in sql and "json_type(value" in sql
        assert "LIMIT" in sql and "ORDER BY" in sql
        with sqlite3.connect(db) as conn:
            functions.register(conn)
            plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        assert "state" in plan and "USE TEMP B-TREE FOR ORDER BY" in plan
        # The Python helpers are only for rows with escapes; none of these rows has one.
        assert "statestore_json_type" in sql
        started = time.monotonic()
        page = await store.query(query, "big||")
        elapsed = time.monotonic() - started
        expected = [i for i in range(19_999, 999, -1) if i % 7 == 3][10:15]
        assert [orjson.loads(i.data)["n"] for i in page.items] == expected
        assert page.token == "15"
        assert elapsed < 30, elapsed


async def test_bulk_get_is_one_indexed_select(db: Path) -> None:
    async with open_store({"connectionString": str(db)}) as store:
        plan = rows(db, f"EXPLAIN QUERY PLAN {sq.bulk_get_sql('state')}", ("[]", "x"))
        details = " ".join(r[3] for r in plan)
        assert "SEARCH state USING INDEX sqlite_autoindex_state_1 (key=?)" in details
        keys = [f"k{i}" for i in range(40_000)]
        await store.transact([SetRequest(k, js(i)) for i, k in enumerate(keys[::3])])
        found = await store.bulk_get([*keys, *keys[:10]])
        assert len(found) == len(keys[::3])


# --- the same answers as the reference store, on random documents and queries --------------

KEYS = ["a", "b", 'q"', "s\\", "é", "n"]
SCALARS: list[q.Scalar] = [None, True, False, 0, 1, -2, 1.5, 2.0, 10**12, "", "a", "b", "é", "A", "1"]


def random_value(rng: random.Random, depth: int) -> object:
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        return {k: random_value(rng, depth + 1) for k in rng.sample(KEYS, rng.randint(0, 3))}
    if roll < 0.3:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 2))]
    return rng.choice(SCALARS)


def random_doc(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return js(rng.choice(SCALARS))
    if roll < 0.08:
        return b"{broken"
    doc = {k: random_value(rng, 0) for k in rng.sample(KEYS, rng.randint(0, 5))}
    if roll < 0.3:  # escaped non-ASCII, as other JSON writers produce it
        return json.dumps(doc, ensure_ascii=True).encode()
    return js(doc)


def random_path(rng: random.Random) -> str:
    return ".".join(rng.choice(KEYS) for _ in range(rng.randint(1, 2)))


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, object]:
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        return {rng.choice(["AND", "OR"]): [random_filter(rng, depth + 1) for _ in range(rng.randint(2, 3))]}
    if roll < 0.4:
        return {"IN": {random_path(rng): rng.sample(SCALARS, rng.randint(1, 4))}}
    op = rng.choice(["EQ", "NEQ", "GT", "GTE", "LT", "LTE"])
    pool = (
        SCALARS if op in ("EQ", "NEQ") else [v for v in SCALARS if v is not None and not isinstance(v, bool)]
    )
    return {op: {random_path(rng): rng.choice(pool)}}


async def test_random_queries_match_the_reference_store(db: Path) -> None:
    rng = random.Random(20260825)
    docs = {f"r||{i:03d}": random_doc(rng) for i in range(300)}
    async with open_store({"connectionString": str(db)}) as store, memory_store() as reference:
        for s in (store, reference):
            await s.transact([SetRequest(k, v) for k, v in docs.items()])
        for n in range(400):
            body: dict[str, object] = {}
            if rng.random() < 0.85:
                body["filter"] = random_filter(rng)
            if rng.random() < 0.6:
                body["sort"] = [
                    {"key": random_path(rng), "order": rng.choice(["ASC", "DESC"])}
                    for _ in range(rng.randint(1, 2))
                ]
            if rng.random() < 0.3:
                body["page"] = {"limit": rng.randint(1, 20), "token": str(rng.randint(0, 30))}
            query = q.parse(body)
            got, want = await store.query(query, "r||"), await reference.query(query, "r||")
            assert [i.key for i in got.items] == [i.key for i in want.items], (n, body)
            assert got.token == want.token


@pytest.mark.parametrize(
    "form", ["{path}", "file:{path}?_txlock=immediate", "{path}?_pragma=synchronous(NORMAL)"]
)
async def test_missing_folders_of_the_database_file_are_created(tmp_path: Path, form: str) -> None:
    db = tmp_path / "not" / "yet" / "state.db"
    schema = schema_for("state.sqlite")
    config = StoreConfig("s", resolve(schema, {"connectionString": form.format(path=db)}))
    store = create_store("state.sqlite", config)
    await store.init()
    try:
        await store.set(SetRequest("k", b"1"))
    finally:
        await store.close()
    assert db.exists()
