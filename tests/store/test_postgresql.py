"""`state.postgresql` specifics, against a real PostgreSQL server (see tests/fixtures/backends.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from fixtures.backends import PostgresServer, free_port, postgres_rows, unique_name
from fixtures.stores import built_as, documented_component_works, initialised
from statestore_sidecar import components
from statestore_sidecar import query as q
from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores.base import BackendUnavailable, SetRequest, StoreError
from statestore_sidecar.stores.postgresql.dialect import build_query, json_doc
from statestore_sidecar.stores.postgresql.metadata import SCHEMA, parse_connection_string, quote_table
from statestore_sidecar.stores.postgresql.store import PostgresStore

DOCS = Path(__file__).parent / "dapr_docs"


def make(metadata: dict[str, str]) -> PostgresStore:
    return built_as(PostgresStore, "state.postgresql", metadata, "pg-test")


@pytest.fixture
async def pg_store(postgresql_metadata: dict[str, str]) -> AsyncIterator[PostgresStore]:
    async with initialised(make(postgresql_metadata)) as store:
        yield store


# --- connection strings -------------------------------------------------------------------------


def test_keyword_form() -> None:
    p = parse_connection_string(
        "host=db.example user=postgres password=example port=5433 connect_timeout=10 database=my_db"
    )
    assert (p.host, p.port, p.user, p.password, p.database) == (
        "db.example",
        5433,
        "postgres",
        "example",
        "my_db",
    )
    assert p.connect_timeout == 10
    assert p.sslmode == "prefer"


def test_keyword_form_quoting_and_aliases() -> None:
    p = parse_connection_string(
        r"host = localhost  dbname='my db' password='it\'s a \\ secret' sslmode=disable application_name=app"
    )
    assert p.database == "my db"
    assert p.password == "it's a \\ secret"
    assert p.sslmode == "disable"
    assert p.ssl() is False
    assert p.server_settings == {"application_name": "app"}


def test_url_form() -> None:
    p = parse_connection_string("postgres://us%40er:p%40ss%2Fw:rd@db.example:6432/state%20db?sslmode=require")
    assert (p.user, p.password, p.host, p.port, p.database) == (
        "us@er",
        "p@ss/w:rd",
        "db.example",
        6432,
        "state db",
    )
    assert p.sslmode == "require"
    assert p.ssl() == "require"
    p = parse_connection_string(
        "postgresql://localhost/db?connect_timeout=5&pool_max_conns=7&search_path=app"
    )
    assert p.connect_timeout == 5 and p.pool_max == 7 and p.server_settings == {"search_path": "app"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host=localhost password=hunter2 frobnicate=1", "frobnicate"),
        ("postgres://u:hunter2@localhost/db?frobnicate=1", "frobnicate"),
        ("host=a,b password=hunter2", "several hosts"),
        ("postgres://u:hunter2@a,b/db", "several hosts"),
        ("host=localhost sslmode=sometimes password=hunter2", "sslmode"),
        ("host=localhost port=http password=hunter2", "port"),
        ("host=localhost password='hunter2", "unterminated"),
        ("host localhost password=hunter2", "key=value"),
        ("mysql://u:hunter2@localhost/db", "postgres://"),
        ("host=x host=y password=hunter2", "twice"),
    ],
)
def test_refused_connection_strings(text: str, message: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_connection_string(text)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)  # never echo the password
    assert info.value.field == "connectionString"


def test_identifiers() -> None:
    assert quote_table("state") == '"state"'
    assert quote_table("My_Schema.State") == '"my_schema"."state"'
    for bad in ["x; DROP TABLE y", 'a"b', "a.b.c", "1abc", "", "a-b", "x" * 64]:
        with pytest.raises(MetadataError):
            quote_table(bad)
        with pytest.raises(MetadataError) as info:
            resolve(SCHEMA, {"connectionString": "host=x", "tableName": bad})
        assert info.value.field == "tableName"
    with pytest.raises(MetadataError) as info:
        resolve(SCHEMA, {"connectionString": "host=x", "metadataTableName": "m; DROP TABLE y"})
    assert info.value.field == "metadataTableName"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("useAzureAD", "true"),
        ("useAWSIAM", "true"),
        ("timeout", "500ms"),
        ("tablePrefix", "x"),
        ("host", "h"),
    ],
)
def test_refused_metadata(name: str, value: str) -> None:
    with pytest.raises(MetadataError) as info:
        resolve(SCHEMA, {"connectionString": "host=x", name: value})
    assert info.value.field == name


def test_schema() -> None:
    values = resolve(SCHEMA, {"connectionString": "host=x"})
    assert values["tableName"] == "state"
    assert values["metadataTableName"] == "dapr_metadata"
    assert values["timeout"] == 20.0
    assert values["cleanupInterval"] == 3600.0


def test_json_doc() -> None:
    assert json_doc(b'{"a": 1}') == '{"a": 1}'
    assert json_doc(b"\xff\x00") is None
    assert json_doc(b'"nul \\u0000 inside"') is None  # jsonb cannot hold it; stays bytes only
    assert json_doc(b'"escaped \\\\u0000 is fine"') == '"escaped \\\\u0000 is fine"'
    assert json_doc(b"null") == "null"


def test_query_sql_uses_parameters_only() -> None:
    query = q.parse({"filter": {"EQ": {"a'; DROP TABLE x; --": "v'"}}, "sort": [{"key": "b.0"}]})
    text, args = build_query('"state"', query, "app||")
    assert "DROP" not in text
    assert "a'; DROP TABLE x; --" in str(args)


# --- Dapr documentation -------------------------------------------------------------------------


@pytest.mark.backends
async def test_dapr_documentation_component_loads_and_connects(postgres_server: PostgresServer) -> None:
    env = {components.secret_env_var("postgres", "connectionString"): postgres_server.connection_string()}
    settings = await documented_component_works(DOCS / "postgresql.yaml", env)
    assert settings["cleanupInterval"] == 3600.0
    assert settings["timeout"] == 20.0


# --- behaviour against the real server ----------------------------------------------------------


@pytest.mark.backends
async def test_url_form_connects(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    store = make({**postgresql_metadata, "connectionString": postgres_server.connection_string("url")})
    await store.init()
    try:
        await store.ping()
    finally:
        await store.close()


@pytest.mark.backends
async def test_values_are_stored_in_daprds_layout(
    pg_store: PostgresStore, postgres_server: PostgresServer
) -> None:
    """JSON in `value jsonb` (normalised by jsonb, as daprd's), other bytes as base64 with `isbinary`;
    the ETag is the row's xmin and the migration level is daprd's."""
    await pg_store.set(SetRequest("k-json", b'{ "b": 1,  "a": [1e3, 2] }'))
    await pg_store.set(SetRequest("k-bin", b"\x00\xff"))
    item = await pg_store.get("k-json")
    assert item is not None and item.data == b'{"a": [1000, 2], "b": 1}'
    binary = await pg_store.get("k-bin")
    assert binary is not None and binary.data == b"\x00\xff"
    rows = await postgres_rows(
        postgres_server, f"SELECT key, value::text, isbinary, xmin::text FROM {pg_store.table} ORDER BY key"
    )
    assert [tuple(r) for r in rows] == [
        ("k-bin", '"AP8="', True, binary.etag),
        ("k-json", '{"a": [1000, 2], "b": 1}', False, item.etag),
    ]
    level = await postgres_rows(
        postgres_server, f"SELECT value FROM {pg_store.metadata_table} WHERE key = 'migrations'"
    )
    assert [r[0] for r in level] == ["2"]


@pytest.mark.backends
async def test_earlier_layout_is_converted(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    """A table of this server's earlier layout (bytes in `value bytea`, JSON in `doc`, an `etag`
    column) is converted to daprd's on start; every value reads back, TTLs are kept."""
    table = postgresql_metadata["tableName"]
    await postgres_rows(
        postgres_server,
        f'CREATE TABLE "{table}" (key text NOT NULL PRIMARY KEY, value bytea NOT NULL, doc jsonb, '
        "etag text NOT NULL, insertdate timestamptz NOT NULL DEFAULT now(), updatedate timestamptz, "
        "expiredate timestamptz)",
    )
    await postgres_rows(postgres_server, f'CREATE INDEX "{table}_expiredate_idx" ON "{table}" (expiredate)')
    big = bytes(range(256)) * 2  # long enough for PostgreSQL's base64 to break lines
    await postgres_rows(
        postgres_server,
        f'INSERT INTO "{table}" (key, value, doc, etag, expiredate) VALUES '
        "('j', '\\x7b2261223a317d', '{\"a\":1}', 'e1', now() + interval '1 hour'), "
        "('b', $1, NULL, 'e2', NULL)",
        big,
    )
    store = make(postgresql_metadata)
    await store.init()
    try:
        found = await store.bulk_get(["j", "b"])
        assert found["j"].data == b'{"a": 1}' and found["b"].data == big
        assert found["j"].expires_at is not None and found["b"].expires_at is None
        assert found["j"].etag != "e1"
        await store.set(SetRequest("j", b"2", etag=found["j"].etag))
    finally:
        await store.close()
    columns = await postgres_rows(
        postgres_server,
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        f'"{table}"',
    )
    assert {r[0] for r in columns} == {"key", "value", "isbinary", "insertdate", "updatedate", "expiredate"}


@pytest.mark.backends
async def test_schema_qualified_table(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    schema = unique_name("s")
    await postgres_rows(postgres_server, f'CREATE SCHEMA "{schema}"')
    store = make({**postgresql_metadata, "tableName": f"{schema}.state"})
    await store.init()
    try:
        await store.set(SetRequest("k", b"1"))
        rows = await postgres_rows(postgres_server, f'SELECT key FROM "{schema}"."state"')
        assert [r[0] for r in rows] == ["k"]
    finally:
        await store.close()


@pytest.mark.backends
async def test_foreign_table_layout_is_refused(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    table = unique_name("foreign")
    await postgres_rows(postgres_server, f'CREATE TABLE "{table}" (key text PRIMARY KEY, value jsonb)')
    store = make({**postgresql_metadata, "tableName": table})
    with pytest.raises(StoreError, match="does not have daprd's state\\.postgresql layout"):
        await store.init()
    await store.close()


@pytest.mark.backends
async def test_cleanup_deletes_expired_rows_once_per_interval(
    pg_store: PostgresStore, postgres_server: PostgresServer
) -> None:
    await pg_store.set(SetRequest("short", b"1", ttl=1))
    await pg_store.set(SetRequest("long", b"1", ttl=3600))
    await pg_store.set(SetRequest("forever", b"1"))
    await asyncio.sleep(1.2)
    assert await pg_store.get("short") is None  # filtered on read before any cleanup
    assert await pg_store.cleanup_expired() == 1
    rows = await postgres_rows(postgres_server, f"SELECT key FROM {pg_store.table} ORDER BY key")
    assert [r[0] for r in rows] == ["forever", "long"]
    await pg_store.set(SetRequest("short2", b"1", ttl=1))
    await asyncio.sleep(1.2)
    assert await pg_store.cleanup_expired() == 0  # another cleanup ran within the interval
    assert await pg_store.cleanup_expired(force=True) == 1


@pytest.mark.backends
async def test_expiry_uses_timestamps(pg_store: PostgresStore, postgres_server: PostgresServer) -> None:
    await pg_store.set(SetRequest("t", b"1", ttl=2_147_483_647))  # the largest TTL Dapr allows
    item = await pg_store.get("t")
    assert item is not None and item.expires_at is not None
    assert item.expires_at > time.time() + 2_000_000_000


@pytest.mark.backends
async def test_query_paths_never_index_arrays(pg_store: PostgresStore) -> None:
    await pg_store.set(SetRequest("p||arr", orjson.dumps({"a": [10, 20]})))
    await pg_store.set(SetRequest("p||obj", orjson.dumps({"a": {"0": 10}})))
    await pg_store.set(SetRequest("p||top", orjson.dumps([10])))
    page = await pg_store.query(q.parse({"filter": {"EQ": {"a.0": 10}}}), "p||")
    assert [i.key for i in page.items] == ["p||obj"]
    page = await pg_store.query(q.parse({"filter": {"EQ": {"0": 10}}}), "p||")
    assert page.items == []


@pytest.mark.backends
async def test_query_strings_compare_by_code_point(pg_store: PostgresStore) -> None:
    for name, text in {"a": "a", "B": "B", "e-acute": "é", "z": "z", "emoji": "😀"}.items():
        await pg_store.set(SetRequest(f"s||{name}", orjson.dumps({"t": text})))
    page = await pg_store.query(q.parse({"sort": [{"key": "t"}]}), "s||")
    assert [i.key.removeprefix("s||") for i in page.items] == ["B", "a", "z", "e-acute", "emoji"]
    page = await pg_store.query(q.parse({"filter": {"GT": {"t": "a"}}}), "s||")
    assert [i.key.removeprefix("s||") for i in page.items] == ["e-acute", "emoji", "z"]


@pytest.mark.backends
async def test_prefix_with_like_characters(pg_store: PostgresStore) -> None:
    await pg_store.set(SetRequest("a%b||x", b"1"))
    await pg_store.set(SetRequest("aXb||y", b"1"))
    page = await pg_store.query(q.parse({}), "a%b||")
    assert [i.key for i in page.items] == ["a%b||x"]


@pytest.mark.backends
async def test_wrong_password_is_backend_unavailable(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    bad = postgres_server.connection_string().replace(postgres_server.password, "wrong")
    store = make({**postgresql_metadata, "connectionString": bad})
    with pytest.raises(BackendUnavailable, match="authentication"):
        await store.init()
    await store.close()


@pytest.mark.backends
async def test_unreachable_server_fails_fast() -> None:
    store = make(
        {"connectionString": f"host=127.0.0.1 port={free_port()} user=x password=y", "timeout": "2s"}
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await store.init()
    assert time.monotonic() - started < 5
    with pytest.raises(BackendUnavailable):
        await store.ping()
    await store.close()


@pytest.mark.backends
async def test_statement_timeout_is_backend_unavailable(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    store = make({**postgresql_metadata, "timeout": "1s"})
    await store.init()
    locker = await asyncpg.connect(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.user,
        password=postgres_server.password,
        database="postgres",
    )
    try:
        await store.set(SetRequest("locked", b"0"))
        # Another session holds the row: the write waits for it past the timeout.
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute(f"SELECT 1 FROM {store.table} WHERE key = 'locked' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer"):
            await store.set(SetRequest("locked", b"1"))
        assert time.monotonic() - started < 3
        await transaction.rollback()
        await store.ping()  # the pool recovers
        await store.set(SetRequest("locked", b"2"))
    finally:
        await locker.close()
        await store.close()


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_tls_server() -> Iterator[PostgresServer]:
    server = PostgresServer(tls=True)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


async def uses_tls(server: PostgresServer, application_name: str) -> bool:
    """Whether the store's sessions (found by their application_name) use TLS, as the server sees them."""
    rows = await postgres_rows(
        server,
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
        application_name,
    )
    assert rows, f"no session named {application_name}"
    return all(bool(r[0]) for r in rows)


@pytest.mark.backends
@pytest.mark.parametrize(
    ("options", "tls"),
    [
        ("sslmode=disable", False),
        ("sslmode=require", True),
        ("sslmode=verify-full sslrootcert={ca}", True),
        ("sslmode=verify-ca sslrootcert={ca} sslcert={cert} sslkey={key}", True),
    ],
)
async def test_tls_modes(postgres_tls_server: PostgresServer, options: str, tls: bool) -> None:
    pki = postgres_tls_server.pki
    assert pki is not None
    extra = options.format(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    name = unique_name("tls")
    base = postgres_tls_server.connection_string().replace(
        "sslmode=disable", f"{extra} application_name={name}"
    )
    store = make({"connectionString": base, "tableName": unique_name("state")})
    await store.init()
    try:
        await store.set(SetRequest("k", b"1"))
        assert await uses_tls(postgres_tls_server, name) is tls
    finally:
        await store.close()


@pytest.mark.backends
async def test_tls_verification_failure_is_backend_unavailable(postgres_tls_server: PostgresServer) -> None:
    # Without sslrootcert, verify-full trusts the system roots only, which did not sign this server.
    base = postgres_tls_server.connection_string().replace("sslmode=disable", "sslmode=verify-full")
    store = make({"connectionString": base, "timeout": "5s"})
    with pytest.raises(BackendUnavailable):
        await store.init()
    await store.close()
