"""`state.mysql`: state in a table of a MySQL-protocol server (tested against MariaDB only: Debian ships
no Oracle MySQL server), through an aiomysql connection pool.

Table layout (schema and table created if missing): `id VARBINARY(2048) PRIMARY KEY` (the key's
UTF-8 bytes: compared byte for byte, trailing spaces significant, ordered by code point), `value
LONGBLOB` (the exact bytes given), `doc JSON` (the same value when it is JSON, else NULL; MariaDB
keeps JSON as checked LONGTEXT; MySQL would keep binary JSON, untested), `etag` (a UUID per write),
`insertdate`, `updatedate`, `expires_at BIGINT` (Unix milliseconds on the server's clock; NULL:
never expires).

* Etag rules are enforced inside single statements (`UPDATE ... WHERE etag = %s`, `INSERT ... ON
  DUPLICATE KEY UPDATE` that only replaces expired rows), so row locks serialise writers.
* Transactions run in one database transaction, in order; a refused operation rolls back all.
* Expired rows are filtered on every read and deleted every `cleanupInterval` by one replica.
* Query translates the shared query tree to JSON_EXTRACT / JSON_TYPE / JSON_UNQUOTE conditions,
  comparing strings as binary (code points) and numbers as doubles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

import orjson

from .. import query as q
from ..schema import Field, Kind, MetadataError, StoreSchema, parse_bool, parse_duration
from . import StoreConfig
from .base import (
    BackendUnavailable,
    Concurrency,
    DeleteRequest,
    EtagMismatch,
    Feature,
    Item,
    Operation,
    QueryItem,
    QueryPage,
    SetRequest,
    StoreError,
)

log = logging.getLogger(__name__)

IDENT_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"

SCHEMA = StoreSchema(
    type="state.mysql",
    fields=(
        Field(
            "connectionString",
            required=True,
            secret=True,
            description="Go MySQL DSN without a schema: user:password@tcp(host:port)/?params",
        ),
        Field("schemaName", default="dapr_state_store", pattern=IDENT_PATTERN),
        Field("tableName", default="state", pattern=IDENT_PATTERN),
        Field("metadataTableName", default="dapr_metadata", pattern=IDENT_PATTERN),
        Field("timeoutInSeconds", Kind.DURATION, default=20.0, minimum=1.0, aliases=("timeout",)),
        Field("cleanupInterval", Kind.DURATION, default=3600.0, aliases=("cleanupIntervalInSeconds",)),
        Field("pemPath", description="CA certificate (PEM file) for tls=custom"),
        Field("pemContents", secret=True, description="CA certificate (PEM text) for tls=custom"),
        Field("maxOpenConns", Kind.INT, default=0, minimum=0, description="0: max(4, CPUs)"),
        Field("connMaxIdleTime", Kind.DURATION, default=0.0),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    unsupported={
        "maxIdleConns": "not implemented; idle connections are reused until connMaxIdleTime",
        "connMaxLifetime": "not implemented; use connMaxIdleTime",
    },
)

T = TypeVar("T")

# -- connection strings ------------------------------------------------------------------------------

_DSN_PARAMS = (
    "parseTime",
    "tls",
    "timeout",
    "readTimeout",
    "writeTimeout",
    "charset",
    "allowNativePasswords",
)
_TLS_VALUES = ("true", "false", "skip-verify", "preferred", "custom")


@dataclass
class DSN:
    """A parsed Go MySQL DSN (github.com/go-sql-driver/mysql syntax)."""

    user: str = ""
    password: str = ""
    net: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str | None = None
    database: str = ""
    tls: str = "false"
    parse_time: bool = False
    timeout: float | None = None
    read_timeout: float | None = None
    write_timeout: float | None = None
    charset: str = "utf8mb4"

    def describe(self) -> str:
        return self.unix_socket or f"{self.host}:{self.port}"


def _duration(name: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise MetadataError("connectionString", f"{name} must be a duration such as 30s") from None
    if seconds < 0:
        raise MetadataError("connectionString", f"{name} must not be negative")
    return seconds


def parse_dsn(text: str) -> DSN:
    """A DSN from `[user[:password]@][net[(addr)]]/dbname[?param=value&...]`; MetadataError if refused.

    Parsed the way go-sql-driver/mysql parses it (the last '/', then the last '@' before it, then
    the first ':'); messages name parts, never values, as the string holds a password.
    """
    dsn = DSN()
    slash = text.rfind("/")
    if slash < 0:
        raise MetadataError("connectionString", "is not a MySQL DSN (user:password@tcp(host:port)/): no '/'")
    left, right = text[:slash], text[slash + 1 :]
    if left:
        at = left.rfind("@")
        if at >= 0:
            credentials, left = left[:at], left[at + 1 :]
            dsn.user, _, dsn.password = credentials.partition(":")
        paren = left.find("(")
        if paren >= 0:
            if not left.endswith(")"):
                raise MetadataError("connectionString", "address must be in parentheses: tcp(host:port)")
            dsn.net, addr = left[:paren], left[paren + 1 : -1]
        else:
            dsn.net, addr = left, ""
        dsn.net = dsn.net or "tcp"
        if dsn.net == "tcp":
            if addr:
                host, sep, port = addr.rpartition(":")
                if not sep or (":" in host and not host.startswith("[")):
                    host, port = addr, ""
                dsn.host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
                if port:
                    if not port.isdigit() or not 0 < int(port) < 65536:
                        raise MetadataError("connectionString", "the port must be a number from 1 to 65535")
                    dsn.port = int(port)
        elif dsn.net == "unix":
            dsn.unix_socket = addr or "/tmp/mysql.sock"
        else:
            raise MetadataError("connectionString", f"network {dsn.net!r} is not supported (use tcp or unix)")
    database, _, params = right.partition("?")
    dsn.database = unquote(database)
    seen: set[str] = set()
    for pair in params.split("&") if params else []:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise MetadataError("connectionString", f"parameter {name!r} has no value")
        value = unquote(raw.replace("+", " "))
        if name not in _DSN_PARAMS:
            raise MetadataError(
                "connectionString",
                f"parameter {name!r} is not supported by this server (supported: {', '.join(_DSN_PARAMS)})",
            )
        if name in seen:
            raise MetadataError("connectionString", f"parameter {name!r} is given twice")
        seen.add(name)
        match name:
            case "allowNativePasswords":
                # Dapr's documented DSNs carry allowNativePasswords=true; the driver always allows them.
                try:
                    allowed = parse_bool(value)
                except ValueError:
                    raise MetadataError(
                        "connectionString", "allowNativePasswords must be true or false"
                    ) from None
                if not allowed:
                    raise MetadataError("connectionString", "allowNativePasswords=false is not supported")
            case "parseTime":
                try:
                    dsn.parse_time = parse_bool(value)
                except ValueError:
                    raise MetadataError("connectionString", "parseTime must be true or false") from None
            case "tls":
                lowered = value.lower()
                if lowered in ("1", "t", "yes", "on"):
                    lowered = "true"
                elif lowered in ("0", "f", "no", "off"):
                    lowered = "false"
                if lowered not in _TLS_VALUES:
                    raise MetadataError("connectionString", f"tls must be one of {', '.join(_TLS_VALUES)}")
                dsn.tls = lowered
            case "timeout":
                dsn.timeout = _duration(name, value) or None
            case "readTimeout":
                dsn.read_timeout = _duration(name, value) or None
            case "writeTimeout":
                dsn.write_timeout = _duration(name, value) or None
            case "charset":
                usable = [c for c in value.split(",") if c.strip().lower() in ("utf8mb4", "utf8", "utf8mb3")]
                if not usable:
                    raise MetadataError(
                        "connectionString", "charset must be utf8mb4 (the store needs full Unicode)"
                    )
                dsn.charset = "utf8mb4"
    return dsn


def quote_ident(name: str, field: str) -> str:
    if not re.fullmatch(IDENT_PATTERN, name):
        raise MetadataError(field, f"{name!r} is not a valid identifier")
    return f"`{name}`"


# -- JSON documents ----------------------------------------------------------------------------------

# MariaDB 10.11's JSON_VALID refuses 32 nested levels (MySQL: 100); deeper values stay bytes only.
MAX_JSON_DEPTH = 31


def _too_deep(doc: Any, depth: int) -> bool:
    if isinstance(doc, dict):
        return depth >= MAX_JSON_DEPTH or any(_too_deep(v, depth + 1) for v in doc.values())
    if isinstance(doc, list):
        return depth >= MAX_JSON_DEPTH or any(_too_deep(v, depth + 1) for v in doc)
    return False


def json_doc(value: bytes) -> str | None:
    """The value as JSON text for the `doc` column, or None when it is not (storable) JSON."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if _too_deep(doc, 0):
        return None
    return value.decode()


# -- query translation -------------------------------------------------------------------------------

_NUMBER_TYPES = "('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL')"


def json_path(path: Sequence[str]) -> str:
    """A MySQL JSON path naming object members only: `$."a"."b"`."""
    return "$" + "".join("." + orjson.dumps(part).decode() for part in path)


class _SQL:
    def __init__(self) -> None:
        self.args: list[Any] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return "%s"

    def path(self, path: Sequence[str]) -> str:
        return f"JSON_EXTRACT(doc, {self.param(json_path(path))})"


def _equal_sql(path: Sequence[str], value: q.Scalar, sql: _SQL) -> str:
    # Every mention of the path is its own parameter: f-strings evaluate left to right, in text order.
    if value is None:
        return f"(JSON_TYPE({sql.path(path)}) = 'NULL')"
    if isinstance(value, bool):
        return (
            f"(JSON_TYPE({sql.path(path)}) = 'BOOLEAN' AND "
            f"JSON_UNQUOTE({sql.path(path)}) = {sql.param('true' if value else 'false')})"
        )
    if isinstance(value, int | float):
        return (
            f"(JSON_TYPE({sql.path(path)}) IN {_NUMBER_TYPES} AND "
            f"CAST({sql.path(path)} AS DOUBLE) = {sql.param(float(value))})"
        )
    return (
        f"(JSON_TYPE({sql.path(path)}) = 'STRING' AND "
        f"CAST(JSON_UNQUOTE({sql.path(path)}) AS BINARY) = CAST({sql.param(value)} AS BINARY))"
    )


def _filter_sql(flt: q.Filter, sql: _SQL) -> str:
    match flt:
        case q.Logical(op=op, children=children):
            joiner = " AND " if op is q.Op.AND else " OR "
            return "(" + joiner.join(_filter_sql(c, sql) for c in children) + ")"
        case q.In(path=path, values=values):
            return "(" + " OR ".join(_equal_sql(path, v, sql) for v in values) + ")"
        case q.Compare(op=op, path=path, value=value):
            if op is q.Op.EQ:
                return _equal_sql(path, value, sql)
            if op is q.Op.NEQ:
                return f"(JSON_TYPE({sql.path(path)}) IS NOT NULL AND NOT {_equal_sql(path, value, sql)})"
            symbol = {q.Op.GT: ">", q.Op.GTE: ">=", q.Op.LT: "<", q.Op.LTE: "<="}[op]
            if isinstance(value, str):
                return (
                    f"(JSON_TYPE({sql.path(path)}) = 'STRING' AND "
                    f"CAST(JSON_UNQUOTE({sql.path(path)}) AS BINARY) {symbol} CAST({sql.param(value)} AS BINARY))"
                )
            return (
                f"(JSON_TYPE({sql.path(path)}) IN {_NUMBER_TYPES} AND "
                f"CAST({sql.path(path)} AS DOUBLE) {symbol} {sql.param(value)})"
            )
    raise AssertionError(f"unknown filter {flt!r}")


def _order_sql(sort: Sequence[q.SortKey], sql: _SQL) -> str:
    parts: list[str] = []
    for sk in sort:
        d = " DESC" if sk.descending else ""
        p = sk.path

        def kind(p: Sequence[str] = p) -> str:
            return f"JSON_TYPE({sql.path(p)})"

        parts += [
            f"(CASE WHEN {kind()} = 'BOOLEAN' THEN 1 WHEN {kind()} IN {_NUMBER_TYPES} THEN 2 "
            f"WHEN {kind()} = 'STRING' THEN 3 WHEN {kind()} IN ('OBJECT', 'ARRAY') THEN 4 ELSE 0 END){d}",
            f"(CASE WHEN {kind()} = 'BOOLEAN' THEN JSON_UNQUOTE({sql.path(p)}) = 'true' END){d}",
            f"(CASE WHEN {kind()} IN {_NUMBER_TYPES} THEN CAST({sql.path(p)} AS DOUBLE) END){d}",
            f"(CASE WHEN {kind()} = 'STRING' THEN CAST(JSON_UNQUOTE({sql.path(p)}) AS BINARY) END){d}",
            f"(CASE WHEN {kind()} IN ('OBJECT', 'ARRAY') THEN CAST({sql.path(p)} AS BINARY) END){d}",
        ]
    parts.append("id")
    return ", ".join(parts)


def like_prefix(prefix: bytes) -> bytes:
    """A LIKE pattern (escape character '!') matching everything that starts with `prefix`."""
    return prefix.replace(b"!", b"!!").replace(b"%", b"!%").replace(b"_", b"!_") + b"%"


_NOW_MS = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
_LIVE = f"(expires_at IS NULL OR expires_at > {_NOW_MS})"


def build_query(table: str, query: q.Query, key_prefix: str) -> tuple[str, list[Any]]:
    sql = _SQL()
    pattern = sql.param(like_prefix(key_prefix.encode()).hex())
    where = ["doc IS NOT NULL", f"id LIKE UNHEX({pattern}) ESCAPE '!'", _LIVE]
    if query.filter is not None:
        where.append(_filter_sql(query.filter, sql))
    where_args = sql.args
    sql.args = []
    order = _order_sql(query.sort, sql)
    text = f"SELECT id, value, etag FROM {table} WHERE {' AND '.join(where)} ORDER BY {order}"
    if query.limit or query.offset:
        text += f" LIMIT {int(query.limit) if query.limit else 18446744073709551615}"
    if query.offset:
        text += f" OFFSET {int(query.offset)}"
    return text, where_args + sql.args


# -- the store ---------------------------------------------------------------------------------------

_REQUIRED_COLUMNS = ("id", "value", "doc", "etag", "expires_at")
# Connection errors: can't connect, server gone away, lost connection, too many connections,
# shutdown in progress, server shutdown, access denied handled apart.
_UNAVAILABLE_CODES = frozenset({1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161, 2002, 2003, 2006, 2013, 2055})
_RETRY_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock
_AUTH_CODES = frozenset({1044, 1045, 1698})


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQLStore:
    features: frozenset[Feature] = SCHEMA.features

    def __init__(self, config: StoreConfig) -> None:
        md = config.metadata
        self._name = config.name
        self.dsn = parse_dsn(md["connectionString"])
        if self.dsn.database:
            raise MetadataError(
                "connectionString",
                "must not name a database after the '/'; give it as schemaName instead",
            )
        self.schema_name: str = md["schemaName"]
        schema = quote_ident(md["schemaName"], "schemaName")
        self.table_name: str = md["tableName"]
        self.table = f"{schema}.{quote_ident(md['tableName'], 'tableName')}"
        self.metadata_table_name: str = md["metadataTableName"]
        self.metadata_table = f"{schema}.{quote_ident(md['metadataTableName'], 'metadataTableName')}"
        self._schema = schema
        self._timeout: float = md["timeoutInSeconds"]
        if self.dsn.read_timeout or self.dsn.write_timeout:
            per_call = (self.dsn.read_timeout or 0.0) + (self.dsn.write_timeout or 0.0)
            self._timeout = min(self._timeout, per_call)
        self._cleanup_interval: float = md["cleanupInterval"]
        self._pem_path: str | None = md["pemPath"] or None
        self._pem_contents: str | None = md["pemContents"] or None
        if self.dsn.tls == "custom" and not (self._pem_path or self._pem_contents):
            raise MetadataError("connectionString", "tls=custom needs pemPath (a CA certificate file)")
        self._max_conns: int = md["maxOpenConns"] or max(4, os.cpu_count() or 1)
        self._idle: float = md["connMaxIdleTime"]
        self._pool: Any = None
        self._cleaner: asyncio.Task[None] | None = None
        self._sql = self._statements()

    def _statements(self) -> dict[str, str]:
        t = self.table
        expiry = f"IF(%s IS NULL, NULL, {_NOW_MS} + %s)"
        insert = f"INSERT INTO {t} (id, value, doc, etag, expires_at) VALUES (UNHEX(%s), UNHEX(%s), %s, %s, {expiry})"
        expired = f"(expires_at IS NOT NULL AND expires_at <= {_NOW_MS})"
        # expires_at is assigned last: MySQL evaluates the assignments left to right.
        first = ", ".join(
            [f"{c} = IF({expired}, VALUES({c}), {c})" for c in ("value", "doc", "etag")]
            + [f"updatedate = IF({expired}, NOW(6), updatedate)"]
            + [f"expires_at = IF({expired}, VALUES(expires_at), expires_at)"]
        )
        return {
            "get": f"SELECT value, etag, expires_at FROM {t} WHERE id = UNHEX(%s) AND {_LIVE}",
            "upsert": (
                f"{insert} ON DUPLICATE KEY UPDATE value = VALUES(value), doc = VALUES(doc), "
                "etag = VALUES(etag), updatedate = NOW(6), expires_at = VALUES(expires_at)"
            ),
            "insert_first": f"{insert} ON DUPLICATE KEY UPDATE {first}",
            "update_etag": (
                f"UPDATE {t} SET value = UNHEX(%s), doc = %s, etag = %s, updatedate = NOW(6), "
                f"expires_at = {expiry} WHERE id = UNHEX(%s) AND etag = %s AND {_LIVE}"
            ),
            "delete": f"DELETE FROM {t} WHERE id = UNHEX(%s)",
            "delete_etag": f"DELETE FROM {t} WHERE id = UNHEX(%s) AND etag = %s AND {_LIVE}",
        }

    # -- connection --------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | None:
        mode = self.dsn.tls
        if mode == "false":
            return None
        if mode == "custom":
            context = ssl.create_default_context(cafile=self._pem_path, cadata=self._pem_contents)
            return context
        context = ssl.create_default_context()
        if mode in ("skip-verify", "preferred"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _unavailable(self, exc: BaseException) -> BackendUnavailable | None:
        import aiomysql

        where = f"mysql {self.dsn.describe()}"
        if isinstance(exc, TimeoutError):
            return BackendUnavailable(f"{where} did not answer within {self._timeout:g}s")
        code = _code(exc)
        if isinstance(exc, aiomysql.OperationalError) and code in _AUTH_CODES:
            return BackendUnavailable(f"{where}: access denied: {exc.args[-1]}")
        if isinstance(exc, aiomysql.OperationalError | aiomysql.InternalError) and code in _UNAVAILABLE_CODES:
            return BackendUnavailable(f"{where} is unavailable: {exc.args[-1]}")
        if isinstance(exc, aiomysql.InterfaceError | OSError | ConnectionError | asyncio.IncompleteReadError):
            return BackendUnavailable(f"{where} is unavailable: {exc or type(exc).__name__}")
        if isinstance(exc, RuntimeError) and "closed" in str(exc).lower():
            return BackendUnavailable(f"{where} is unavailable: {exc}")
        return None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, closed instead of reused when a call on it did not finish cleanly."""
        if self._pool is None:
            raise BackendUnavailable("the MySQL store is not initialised")
        conn = await self._pool.acquire()
        try:
            yield conn
        except BaseException as exc:
            import aiomysql

            clean = isinstance(exc, StoreError | aiomysql.MySQLError) and self._unavailable(exc) is None
            if not clean:
                conn.close()
            raise
        finally:
            self._pool.release(conn)

    async def _call(self, work: Callable[[Any], Awaitable[T]], retries: int = 0, read: bool = False) -> T:
        """Run `work` on a pooled connection within the timeout; map failures to store errors.

        Deadlocks are retried `retries` times; reads are retried once on a lost connection (a
        pooled connection may have died with a server restart).
        """
        import aiomysql

        attempt, reconnects = 0, 0
        while True:
            try:
                async with asyncio.timeout(self._timeout), self._connection() as conn:
                    return await work(conn)
            except StoreError:
                raise
            except Exception as exc:
                code = _code(exc)
                if isinstance(exc, aiomysql.MySQLError) and code in _RETRY_CODES and attempt < retries:
                    attempt += 1
                    await asyncio.sleep(0.01 * attempt)
                    continue
                mapped = self._unavailable(exc)
                if mapped is not None:
                    if read and reconnects == 0 and not isinstance(exc, TimeoutError):
                        reconnects += 1
                        continue
                    raise mapped from None
                if isinstance(exc, aiomysql.MySQLError):
                    raise StoreError(f"mysql: {exc.args[-1] if exc.args else exc}") from None
                raise

    async def init(self) -> None:
        import aiomysql

        if self._pool is None:
            d = self.dsn
            connect: dict[str, Any] = {
                "user": d.user or None,
                "password": d.password,
                "charset": "utf8mb4",
                "autocommit": True,
                "connect_timeout": min(d.timeout or self._timeout, self._timeout),
                "ssl": self._ssl(),
                "init_command": "SET time_zone = '+00:00'",
            }
            if d.unix_socket:
                connect["unix_socket"] = d.unix_socket
            else:
                connect.update(host=d.host, port=d.port)
            try:
                async with asyncio.timeout(self._timeout):
                    self._pool = await aiomysql.create_pool(
                        minsize=0,
                        maxsize=self._max_conns,
                        pool_recycle=self._idle if self._idle > 0 else -1,
                        **connect,
                    )
            except Exception as exc:
                mapped = self._unavailable(exc)
                if mapped is not None:
                    raise mapped from None
                raise
        await self._call(self._migrate, retries=3)
        if self._cleanup_interval > 0 and self._cleaner is None:
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_periodically())

    async def _migrate(self, conn: Any) -> None:
        # Look before creating: "IF NOT EXISTS" on an existing object raises a client-side Warning.
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (self.schema_name,)
            )
            if not (await cur.fetchone())[0]:
                await cur.execute(f"CREATE DATABASE IF NOT EXISTS {self._schema} CHARACTER SET utf8mb4")
            await cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.schema_name,),
            )
            tables = {str(row[0]) for row in await cur.fetchall()}
            if self.metadata_table_name not in tables:
                await cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.metadata_table} ("
                    "id VARCHAR(255) NOT NULL PRIMARY KEY, value TEXT NOT NULL) "
                    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
            if self.table_name not in tables:
                await cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "id VARBINARY(2048) NOT NULL PRIMARY KEY, value LONGBLOB NOT NULL, doc JSON NULL, "
                    "etag VARCHAR(64) NOT NULL, insertdate DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
                    "updatedate DATETIME(6) NULL, expires_at BIGINT NULL, INDEX expires_at_idx (expires_at)) "
                    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                )
            await cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (self.schema_name, self.table_name),
            )
            columns = {str(row[0]).lower() for row in await cur.fetchall()}
        missing = set(_REQUIRED_COLUMNS) - columns
        if missing:
            raise StoreError(
                f"table {self.schema_name}.{self.table_name} exists but was not created by this server "
                f"(no column {', '.join(sorted(missing))}); choose another tableName"
            )

    async def close(self) -> None:
        cleaner, self._cleaner = self._cleaner, None
        if cleaner is not None:
            cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            try:
                async with asyncio.timeout(5):
                    await pool.wait_closed()
            except Exception:
                pool.terminate()

    async def ping(self) -> None:
        async def ping(conn: Any) -> None:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                await cur.fetchall()

        await self._call(ping, read=True)

    # -- expiry cleanup ------------------------------------------------------------------------------
    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self.cleanup()
            except StoreError as exc:
                log.warning("mysql %s: expired-row cleanup failed: %s", self._name, exc)

    async def cleanup(self, force: bool = False) -> int:
        """Delete expired rows, unless another replica did within the cleanup interval; the count."""
        interval_ms = 0 if force else int(max(self._cleanup_interval - 1.0, 0.0) * 1000)

        async def clean(conn: Any) -> int:
            async with conn.cursor() as cur:
                claimed = await cur.execute(
                    f"INSERT INTO {self.metadata_table} (id, value) VALUES (%s, {_NOW_MS}) "
                    f"ON DUPLICATE KEY UPDATE value = IF(CAST(value AS SIGNED) <= {_NOW_MS} - %s, VALUES(value), value)",
                    (f"last-cleanup-{self.table_name}", interval_ms),
                )
                if not claimed:
                    return 0
                deleted: int = await cur.execute(
                    f"DELETE FROM {self.table} WHERE expires_at IS NOT NULL AND expires_at <= {_NOW_MS}"
                )
                return deleted

        return await self._call(clean, retries=1)

    # -- reads ---------------------------------------------------------------------------------------
    @staticmethod
    def _item(value: bytes, etag: str, expires_at: int | None) -> Item:
        return Item(bytes(value), etag, expires_at / 1000.0 if expires_at is not None else None)

    async def get(self, key: str) -> Item | None:
        async def get(conn: Any) -> Item | None:
            async with conn.cursor() as cur:
                await cur.execute(self._sql["get"], (key.encode().hex(),))
                row = await cur.fetchone()
            return None if row is None else self._item(*row)

        return await self._call(get, read=True)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        marks = ", ".join(["UNHEX(%s)"] * len(unique))
        text = f"SELECT id, value, etag, expires_at FROM {self.table} WHERE id IN ({marks}) AND {_LIVE}"

        async def bulk(conn: Any) -> dict[str, Item]:
            async with conn.cursor() as cur:
                await cur.execute(text, [k.encode().hex() for k in unique])
                rows = await cur.fetchall()
            return {bytes(r[0]).decode(): self._item(r[1], r[2], r[3]) for r in rows}

        return await self._call(bulk, read=True)

    # -- writes --------------------------------------------------------------------------------------
    async def _apply(self, cur: Any, op: Operation) -> None:
        # Binary values travel as hex (UNHEX in SQL): aiomysql cannot escape bytes with PyMySQL >= 1.1.
        key = op.key.encode().hex()
        if isinstance(op, SetRequest):
            ttl_ms = op.ttl * 1000 if op.ttl is not None and op.ttl > 0 else None
            doc, etag = json_doc(op.value), str(uuid.uuid4())
            args: tuple[Any, ...]
            if op.etag:
                args = (op.value.hex(), doc, etag, ttl_ms, ttl_ms, key, op.etag)
                if await cur.execute(self._sql["update_etag"], args) == 0:
                    raise EtagMismatch(f"etag mismatch for key {op.key}")
                return
            args = (key, op.value.hex(), doc, etag, ttl_ms, ttl_ms)
            if op.concurrency is Concurrency.FIRST_WRITE:
                if await cur.execute(self._sql["insert_first"], args) == 0:
                    raise EtagMismatch(f"key {op.key} already exists and first-write was requested")
                return
            await cur.execute(self._sql["upsert"], args)
        elif op.etag:
            if await cur.execute(self._sql["delete_etag"], (key, op.etag)) == 0:
                raise EtagMismatch(f"etag mismatch for key {op.key}")
        else:
            await cur.execute(self._sql["delete"], (key,))

    async def _single(self, op: Operation) -> None:
        async def run(conn: Any) -> None:
            async with conn.cursor() as cur:
                await self._apply(cur, op)

        await self._call(run, retries=1)

    async def set(self, request: SetRequest) -> None:
        await self._single(request)

    async def delete(self, request: DeleteRequest) -> None:
        await self._single(request)

    async def transact(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return

        async def run(conn: Any) -> None:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    for op in operations:
                        await self._apply(cur, op)
                await conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()
                raise

        await self._call(run, retries=3)

    # -- query ---------------------------------------------------------------------------------------
    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        text, args = build_query(self.table, query, key_prefix)

        async def run(conn: Any) -> list[QueryItem]:
            async with conn.cursor() as cur:
                await cur.execute(text, args)
                rows = await cur.fetchall()
            return [QueryItem(bytes(r[0]).decode(), bytes(r[1]), r[2]) for r in rows]

        items = await self._call(run, read=True)
        return QueryPage(items, q.next_token(query, len(items)))


def create(config: StoreConfig) -> MySQLStore:
    return MySQLStore(config)
