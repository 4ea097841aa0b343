"""`state.mysql` specifics, against a real MariaDB server (see tests/fixtures/backends.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pymysql  # type: ignore[import-untyped]
import pytest

from fixtures.backends import MariaDBServer, free_port, unique_name
from fixtures.stores import built_as, documented_component_works, initialised
from statestore_sidecar import components
from statestore_sidecar import query as q
from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores.base import BackendUnavailable, SetRequest, StoreError
from statestore_sidecar.stores.mysql.dialect import (
    MAX_JSON_DEPTH,
    build_query,
    json_doc,
    json_path,
    like_prefix,
)
from statestore_sidecar.stores.mysql.metadata import SCHEMA, parse_dsn, quote_ident
from statestore_sidecar.stores.mysql.store import MySQLStore

DOCS = Path(__file__).parent / "dapr_docs"


def make(metadata: dict[str, str]) -> MySQLStore:
    return built_as(MySQLStore, "state.mysql", metadata, "my-test")


@pytest.fixture
async def my_store(mysql_metadata: dict[str, str]) -> AsyncIterator[MySQLStore]:
    async with initialised(make(mysql_metadata)) as store:
        yield store


def sql(server: MariaDBServer, text: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password)
    try:
        with conn.cursor() as cur:
            cur.execute(text, args)
            rows: list[tuple[Any, ...]] = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


# --- connection strings -------------------------------------------------------------------------


def test_dsn_documented_forms() -> None:
    d = parse_dsn("root:my-secret-pw@tcp(db.example:3307)/?allowNativePasswords=true&parseTime=true")
    assert (d.user, d.password, d.host, d.port, d.net) == ("root", "my-secret-pw", "db.example", 3307, "tcp")
    assert d.parse_time is True and d.database == ""
    d = parse_dsn("user:pass@tcp(localhost:3306)/?tls=custom&timeout=5s&readTimeout=2s&writeTimeout=1500ms")
    assert d.tls == "custom" and d.timeout == 5 and d.read_timeout == 2 and d.write_timeout == 1.5


def test_dsn_passwords_with_separators() -> None:
    # As go-sql-driver/mysql: the last '/' ends the address, the last '@' before it ends the password.
    d = parse_dsn("us:er:p@ss/w@rd@tcp([::1]:3306)/")
    assert (d.user, d.password, d.host, d.port) == ("us", "er:p@ss/w@rd", "::1", 3306)


def test_dsn_defaults_and_unix_socket() -> None:
    d = parse_dsn("/")
    assert (d.user, d.host, d.port, d.tls) == ("", "127.0.0.1", 3306, "false")
    d = parse_dsn("u@tcp(dbhost)/?charset=utf8mb4,utf8")
    assert (d.host, d.port, d.charset) == ("dbhost", 3306, "utf8mb4")
    d = parse_dsn("u:p@unix(/run/mysqld/mysqld.sock)/")
    assert d.unix_socket == "/run/mysqld/mysqld.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("root:hunter2@tcp(localhost:3306)/?multiStatements=true", "multiStatements"),
        ("root:hunter2@tcp(localhost:3306)/?tls=maybe", "tls"),
        ("root:hunter2@tcp(localhost:3306)/?timeout=soon", "timeout"),
        ("root:hunter2@tcp(localhost:3306)/?charset=latin1", "charset"),
        ("root:hunter2@tcp(localhost:3306)/?allowNativePasswords=false", "allowNativePasswords"),
        ("root:hunter2@tcp(localhost:3306)/?parseTime", "no value"),
        ("root:hunter2@tcp(localhost:3306", "no '/'"),
        ("root:hunter2@tcp(localhost:3306/", "parentheses"),
        ("root:hunter2@tcp(localhost:99999)/", "port"),
        ("root:hunter2@udp(localhost:3306)/", "network"),
        ("root:hunter2@tcp(localhost:3306)/?tls=true&tls=false", "twice"),
    ],
)
def test_refused_dsns(text: str, message: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_dsn(text)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_dsn_with_a_database_is_refused() -> None:
    with pytest.raises(MetadataError, match="schemaName"):
        make({"connectionString": "u:p@tcp(localhost:3306)/mydb"})


def test_tls_custom_needs_a_pem() -> None:
    with pytest.raises(MetadataError, match="pemPath"):
        make({"connectionString": "u:p@tcp(localhost:3306)/?tls=custom"})
    make({"connectionString": "u:p@tcp(localhost:3306)/?tls=custom", "pemPath": "/etc/ssl/certs/ca.pem"})


def test_identifiers() -> None:
    assert quote_ident("dapr_state_store", "schemaName") == "`dapr_state_store`"
    for field in ("schemaName", "tableName", "metadataTableName"):
        for bad in ["x; DROP TABLE y", "a`b", "a.b", "1abc", "a-b", "x" * 65]:
            with pytest.raises(MetadataError) as info:
                resolve(SCHEMA, {"connectionString": "/", field: bad})
            assert info.value.field == field
            with pytest.raises(MetadataError):
                quote_ident(bad, field)


def test_schema() -> None:
    values = resolve(SCHEMA, {"connectionString": "/"})
    assert values["schemaName"] == "dapr_state_store"
    assert values["tableName"] == "state"
    assert values["metadataTableName"] == "dapr_metadata"
    assert values["timeoutInSeconds"] == 20.0
    assert values["cleanupInterval"] == 3600.0


def test_json_doc_depth_and_binary() -> None:
    deep_ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    too_deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    assert json_doc(deep_ok) == deep_ok.decode()
    assert json_doc(too_deep) is None
    assert json_doc(b"\xff") is None
    assert json_doc(b'"a\\u0000b"') == '"a\\u0000b"'


def test_query_sql_helpers() -> None:
    assert json_path(["a", 'b"c', "0"]) == '$."a"."b\\"c"."0"'
    assert like_prefix(b"a%b_c!||") == b"a!%b!_c!!||%"
    text, args = build_query("`s`.`t`", q.parse({"filter": {"EQ": {"x'; DROP TABLE t; --": 1}}}), "p||")
    assert "DROP" not in text
    assert text.count("%s") == len(args)


# --- Dapr documentation -------------------------------------------------------------------------


@pytest.mark.backends
async def test_dapr_documentation_component_loads_and_connects(mariadb_server: MariaDBServer) -> None:
    dsn = mariadb_server.dsn("allowNativePasswords=true")
    env = {components.secret_env_var("mysql", "connectionString"): dsn}
    settings = await documented_component_works(DOCS / "mysql.yaml", env)
    assert settings["timeoutInSeconds"] == 30.0


# --- behaviour against the real server ----------------------------------------------------------


@pytest.mark.backends
async def test_schema_is_created(mariadb_server: MariaDBServer, mysql_metadata: dict[str, str]) -> None:
    schema = unique_name("schema")
    store = make({**mysql_metadata, "schemaName": schema})
    await store.init()
    try:
        await store.set(SetRequest("k", b"\x00\xff"))
        await store.set(SetRequest("j", b'{ "n": 1e3 }'))
        rows = sql(
            mariadb_server,
            f"SELECT id, value, isbinary, eTag FROM `{schema}`.`{mysql_metadata['tableName']}` ORDER BY id",
        )
        # daprd's layout: JSON text as given; other bytes as a base64 JSON string marked isbinary.
        assert [r[:3] for r in rows] == [("j", '{ "n": 1e3 }', 0), ("k", '"AP8="', 1)]
        assert all(len(r[3]) == 36 for r in rows)
        item = await store.get("k")
        assert item is not None and item.data == b"\x00\xff"
    finally:
        await store.close()


@pytest.mark.backends
async def test_keys_compare_byte_for_byte(my_store: MySQLStore) -> None:
    # With a PAD SPACE or case-insensitive collation these would collide.
    keys = ["k", "k ", "K", "ké", "ke\u0301"]
    for i, key in enumerate(keys):
        await my_store.set(SetRequest(key, str(i).encode()))
    for i, key in enumerate(keys):
        item = await my_store.get(key)
        assert item is not None and item.data == str(i).encode(), key
    assert set(await my_store.bulk_get(keys)) == set(keys)


@pytest.mark.backends
async def test_deep_json_is_stored_but_not_queryable(my_store: MySQLStore) -> None:
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    await my_store.set(SetRequest("d||deep", deep))
    await my_store.set(SetRequest("d||flat", b'{"a":1}'))
    item = await my_store.get("d||deep")
    assert item is not None and item.data == deep
    page = await my_store.query(q.parse({}), "d||")
    assert [i.key for i in page.items] == ["d||flat"]


@pytest.mark.backends
async def test_query_strings_compare_by_code_point(my_store: MySQLStore) -> None:
    for name, text in {"a": "a", "a-space": "a ", "B": "B", "e-acute": "é", "z": "z", "emoji": "😀"}.items():
        await my_store.set(SetRequest(f"s||{name}", orjson.dumps({"t": text})))
    page = await my_store.query(q.parse({"sort": [{"key": "t"}]}), "s||")
    assert [i.key.removeprefix("s||") for i in page.items] == ["B", "a", "a-space", "z", "e-acute", "emoji"]
    page = await my_store.query(q.parse({"filter": {"EQ": {"t": "a"}}}), "s||")
    assert [i.key for i in page.items] == ["s||a"]


@pytest.mark.backends
async def test_prefix_with_like_characters(my_store: MySQLStore) -> None:
    await my_store.set(SetRequest("a%b_||x", b"1"))
    await my_store.set(SetRequest("aXbY||y", b"1"))
    page = await my_store.query(q.parse({}), "a%b_||")
    assert [i.key for i in page.items] == ["a%b_||x"]


@pytest.mark.backends
async def test_cleanup_deletes_expired_rows_once_per_interval(
    my_store: MySQLStore, mariadb_server: MariaDBServer
) -> None:
    await my_store.set(SetRequest("short", b"1", ttl=1))
    await my_store.set(SetRequest("long", b"1", ttl=3600))
    await my_store.set(SetRequest("forever", b"1"))
    await asyncio.sleep(2.2)  # whole seconds, rounded up
    assert await my_store.get("short") is None
    assert await my_store.cleanup_expired() == 1
    rows = sql(mariadb_server, f"SELECT id FROM {my_store.table} ORDER BY id")
    assert [r[0] for r in rows] == ["forever", "long"]
    await my_store.set(SetRequest("short2", b"1", ttl=1))
    await asyncio.sleep(2.2)  # whole seconds, rounded up
    assert await my_store.cleanup_expired() == 0
    assert await my_store.cleanup_expired(force=True) == 1


@pytest.mark.backends
async def test_ttl_past_2038_is_refused(my_store: MySQLStore) -> None:
    """daprd's layout keeps expiry in a TIMESTAMP, which ends in January 2038."""
    with pytest.raises(StoreError, match="2038"):
        await my_store.set(SetRequest("t", b"1", ttl=2_147_483_647))
    assert await my_store.get("t") is None
    await my_store.set(SetRequest("t", b"1", ttl=365 * 24 * 3600))
    item = await my_store.get("t")
    assert item is not None and item.expires_at is not None
    assert item.expires_at > time.time() + 364 * 24 * 3600


@pytest.mark.backends
async def test_earlier_layout_is_converted(
    mariadb_server: MariaDBServer, mysql_metadata: dict[str, str]
) -> None:
    """A table of this server's earlier layout (exact bytes in `value`, JSON in `doc`, `expires_at`
    in milliseconds) is converted to daprd's on start: every value, ETag and expiry carries over."""
    table = f"dapr_state_store.`{mysql_metadata['tableName']}`"
    sql(mariadb_server, "CREATE DATABASE IF NOT EXISTS dapr_state_store")
    sql(
        mariadb_server,
        f"CREATE TABLE {table} (id VARBINARY(2048) NOT NULL PRIMARY KEY, value LONGBLOB NOT NULL, "
        "doc JSON NULL, etag VARCHAR(64) NOT NULL, insertdate DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
        "updatedate DATETIME(6) NULL, expires_at BIGINT NULL, INDEX expires_at_idx (expires_at))",
    )
    big = bytes(range(256)) * 2  # long enough for MariaDB's base64 to break lines
    expiry_ms = int((time.time() + 3600) * 1000)
    sql(
        mariadb_server,
        f"INSERT INTO {table} (id, value, doc, etag, expires_at) VALUES "
        "('j', '{\"a\": 1e3}', '{\"a\": 1e3}', 'e1', %s), ('b', %s, NULL, 'e2', NULL)",
        (expiry_ms, big),
    )
    store = make(mysql_metadata)
    await store.init()
    try:
        found = await store.bulk_get(["j", "b"])
        assert found["j"].data == b'{"a": 1e3}' and found["b"].data == big
        assert (found["j"].etag, found["b"].etag) == ("e1", "e2")
        assert found["j"].expires_at is not None and abs(found["j"].expires_at - expiry_ms / 1000) <= 1
        assert found["b"].expires_at is None
        await store.set(SetRequest("j", b"2", etag="e1"))
    finally:
        await store.close()
    columns = sql(
        mariadb_server,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dapr_state_store' "
        "AND table_name = %s",
        (mysql_metadata["tableName"],),
    )
    assert {str(c[0]) for c in columns} == {
        "id", "value", "isbinary", "insertDate", "updateDate", "eTag", "expiredate"
    }  # fmt: skip


@pytest.mark.backends
async def test_foreign_table_layout_is_refused(
    mariadb_server: MariaDBServer, mysql_metadata: dict[str, str]
) -> None:
    table = unique_name("foreign")
    sql(mariadb_server, "CREATE DATABASE IF NOT EXISTS dapr_state_store")
    sql(mariadb_server, f"CREATE TABLE dapr_state_store.`{table}` (id VARCHAR(255) PRIMARY KEY, value JSON)")
    store = make({**mysql_metadata, "tableName": table})
    with pytest.raises(StoreError, match=r"does not have daprd's state\.mysql layout"):
        await store.init()
    await store.close()


@pytest.mark.backends
async def test_wrong_password_is_backend_unavailable(
    mariadb_server: MariaDBServer, mysql_metadata: dict[str, str]
) -> None:
    bad = mariadb_server.dsn().replace(mariadb_server.password, "wrong")
    store = make({**mysql_metadata, "connectionString": bad})
    with pytest.raises(BackendUnavailable, match="access denied"):
        await store.init()
    await store.close()


@pytest.mark.backends
async def test_unreachable_server_fails_fast() -> None:
    store = make({"connectionString": f"u:p@tcp(127.0.0.1:{free_port()})/", "timeoutInSeconds": "2"})
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await store.init()
    assert time.monotonic() - started < 5
    with pytest.raises(BackendUnavailable):
        await store.ping()
    await store.close()


@pytest.mark.backends
async def test_slow_call_is_backend_unavailable_and_pool_recovers(
    mariadb_server: MariaDBServer, mysql_metadata: dict[str, str]
) -> None:
    store = make({**mysql_metadata, "timeoutInSeconds": "1"})
    await store.init()
    locker = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.user,
        password=mariadb_server.password,
    )
    try:
        await store.set(SetRequest("locked", b"0"))
        # Another session holds the row: the write waits for it past the timeout.
        locker.begin()
        with locker.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {store.table} WHERE id = %s FOR UPDATE", (b"locked",))
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer"):
            await store.set(SetRequest("locked", b"1"))
        assert time.monotonic() - started < 3
        locker.rollback()
        await store.ping()
        await store.set(SetRequest("after", b"1"))
    finally:
        locker.close()
        await store.close()


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_tls_server() -> Iterator[MariaDBServer]:
    server = MariaDBServer(tls=True)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def tls_handshakes(server: MariaDBServer) -> int:
    """TLS handshakes the server has accepted (this helper's own connection uses none)."""
    conn = pymysql.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, ssl_disabled=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
            ((_, value),) = cur.fetchall()
        return int(value)
    finally:
        conn.close()


@pytest.mark.backends
@pytest.mark.parametrize(
    ("params", "extra", "tls"),
    [
        ("", {}, False),
        ("tls=skip-verify", {}, True),
        ("tls=preferred", {}, True),
        ("tls=custom", {"pemPath": "{ca}"}, True),
        ("tls=custom", {"pemContents": "{ca_text}"}, True),
    ],
)
async def test_tls_modes(
    mariadb_tls_server: MariaDBServer, params: str, extra: dict[str, str], tls: bool
) -> None:
    pki = mariadb_tls_server.pki
    assert pki is not None
    values = {k: v.format(ca=pki.ca_cert, ca_text=pki.ca_cert.read_text()) for k, v in extra.items()}
    store = make(
        {"connectionString": mariadb_tls_server.dsn(params), "tableName": unique_name("state"), **values}
    )
    before = tls_handshakes(mariadb_tls_server)
    await store.init()
    try:
        await store.set(SetRequest("k", b"1"))
        assert (tls_handshakes(mariadb_tls_server) > before) is tls
    finally:
        await store.close()


@pytest.mark.backends
async def test_tls_verification_failure_is_backend_unavailable(mariadb_tls_server: MariaDBServer) -> None:
    # tls=true verifies against the system roots, which did not sign this server.
    store = make({"connectionString": mariadb_tls_server.dsn("tls=true"), "timeoutInSeconds": "5"})
    with pytest.raises(BackendUnavailable):
        await store.init()
    await store.close()
