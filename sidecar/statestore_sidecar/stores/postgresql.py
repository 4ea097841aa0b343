"""`state.postgresql`: state in a PostgreSQL table, through an asyncpg connection pool.

Table layout (created if missing): `key text PRIMARY KEY`, `value bytea` (the exact bytes given,
returned byte for byte), `doc jsonb` (the same value parsed, NULL when it is not JSON: binary values
round-trip exactly and never break a query), `etag text` (a UUID per write), `insertdate`,
`updatedate`, `expiredate timestamptz` (NULL: never expires).

* Etag rules are enforced inside single statements (`UPDATE ... WHERE etag = $n`, `INSERT ... ON
  CONFLICT DO UPDATE ... WHERE expired`), so concurrent writers are serialised by row locks.
* Transactions run in one database transaction, in order; a refused operation rolls back all.
* Expired rows are filtered on every read (the server's clock), and deleted every `cleanupInterval`
  by one replica at a time (coordinated through the metadata table).
* Query translates the shared query tree to SQL over `doc` (type-aware, strings `COLLATE "C"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from .. import query as q
from ..schema import Field, Kind, MetadataError, StoreSchema, parse_duration
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

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
TABLE_PATTERN = rf"{_IDENT}(\.{_IDENT})?"

SCHEMA = StoreSchema(
    type="state.postgresql",
    fields=(
        Field(
            "connectionString",
            required=True,
            secret=True,
            description="pgx keyword form (host=... user=...) or URL form (postgres://...)",
        ),
        Field("tableName", default="state", pattern=TABLE_PATTERN, description="table, or schema.table"),
        Field("metadataTableName", default="dapr_metadata", pattern=TABLE_PATTERN),
        Field("timeout", Kind.DURATION, default=20.0, minimum=1.0, aliases=("timeoutInSeconds",)),
        Field("cleanupInterval", Kind.DURATION, default=3600.0, aliases=("cleanupIntervalInSeconds",)),
        Field("maxConns", Kind.INT, default=0, minimum=0, description="0: max(4, CPUs)"),
        Field("connectionMaxIdleTime", Kind.DURATION, default=300.0),
        Field(
            "queryExecMode",
            default="",
            choices=("", "cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"),
            description="cache_statement (default) caches prepared statements; the others do not "
            "(for connection poolers such as PgBouncer)",
        ),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    versions=("v1",),
    unsupported={
        "useAzureAD": "Azure AD authentication is not implemented; use a password in connectionString",
        "azureClientId": "Azure AD authentication is not implemented",
        "azureTenantId": "Azure AD authentication is not implemented",
        "azureClientSecret": "Azure AD authentication is not implemented",
        "azureCertificate": "Azure AD authentication is not implemented",
        "azureCertificateFile": "Azure AD authentication is not implemented",
        "azureCertificatePassword": "Azure AD authentication is not implemented",
        "useAWSIAM": "AWS IAM authentication is not implemented; use a password in connectionString",
        "awsRegion": "AWS IAM authentication is not implemented",
        "awsAccessKey": "AWS IAM authentication is not implemented",
        "awsSecretKey": "AWS IAM authentication is not implemented",
        "awsSessionToken": "AWS IAM authentication is not implemented",
        "awsIamRoleArn": "AWS IAM authentication is not implemented",
        "awsStsSessionName": "AWS IAM authentication is not implemented",
        "host": "give the host inside connectionString",
        "hostaddr": "give the host inside connectionString",
        "port": "give the port inside connectionString",
        "database": "give the database inside connectionString",
        "user": "give the user inside connectionString",
        "password": "give the password inside connectionString",
        "sslRootCert": "give sslrootcert inside connectionString",
        "tablePrefix": "belongs to state.postgresql v2, which is not implemented; use tableName",
    },
)

T = TypeVar("T")

# -- connection strings ------------------------------------------------------------------------------

_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# pgx options we understand; every other option is refused (pgx would send it to the server as a
# run-time parameter, which we do only for the well-known ones listed in _RUNTIME_PARAMS).
_KNOWN_OPTIONS = frozenset(
    {
        "host", "hostaddr", "port", "user", "password", "dbname", "database", "sslmode", "sslrootcert",
        "sslcert", "sslkey", "sslpassword", "connect_timeout", "pool_max_conns", "pool_min_conns",
        "pool_max_conn_idle_time",
    }
)  # fmt: skip
_RUNTIME_PARAMS = frozenset({"application_name", "search_path", "timezone", "statement_timeout"})


@dataclass
class ConnectParams:
    """What asyncpg needs to connect, translated from a pgx connection string."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = None
    connect_timeout: float | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    pool_max: int | None = None
    pool_min: int | None = None
    pool_idle: float | None = None

    def ssl(self) -> ssl.SSLContext | str | bool:
        """The `ssl` argument of asyncpg.connect for this sslmode."""
        if self.sslmode == "disable":
            return False
        files = self.sslrootcert or self.sslcert
        if not files and self.sslmode in ("allow", "prefer", "require"):
            return self.sslmode
        if self.sslmode in ("verify-ca", "verify-full"):
            context = ssl.create_default_context(cafile=self.sslrootcert)
            context.check_hostname = self.sslmode == "verify-full"
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            if self.sslrootcert:  # libpq: a root certificate with "require" verifies the CA
                context.load_verify_locations(cafile=self.sslrootcert)
            else:
                context.verify_mode = ssl.CERT_NONE
        if self.sslcert:
            context.load_cert_chain(self.sslcert, self.sslkey, password=self.sslpassword)
        return context

    def describe(self) -> str:
        """host:port/database, for messages (never the password)."""
        return f"{self.host or 'localhost'}:{self.port or 5432}/{self.database or self.user or ''}"


def _keyword_pairs(text: str) -> list[tuple[str, str]]:
    """`key=value` pairs of a libpq/pgx keyword connection string (values may be 'quoted')."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        name = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not name or i >= n or text[i] != "=":
            raise MetadataError("connectionString", f"expected key=value near option {name or '?'!r}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise MetadataError("connectionString", f"unterminated quoted value for {name!r}")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif ch == "'":
                    i += 1
                    break
                else:
                    value.append(ch)
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
        pairs.append((name, "".join(value)))


def _url_pairs(text: str) -> list[tuple[str, str]]:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise MetadataError("connectionString", f"is not a valid URL: {exc}") from None
    pairs: list[tuple[str, str]] = []
    netloc = parts.netloc.rpartition("@")[2]
    if "," in netloc:
        raise MetadataError("connectionString", "lists several hosts; only one host is supported")
    if parts.hostname:
        pairs.append(("host", unquote(parts.hostname)))
    if port is not None:
        pairs.append(("port", str(port)))
    if parts.username:
        pairs.append(("user", unquote(parts.username)))
    if parts.password is not None:
        pairs.append(("password", unquote(parts.password)))
    database = parts.path.lstrip("/")
    if database:
        pairs.append(("database", unquote(database)))
    if parts.fragment:
        raise MetadataError("connectionString", "must not have a #fragment")
    pairs.extend(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    return pairs


def parse_connection_string(text: str) -> ConnectParams:
    """ConnectParams from a pgx connection string, keyword or URL form; MetadataError if refused.

    Messages name options, never values: the string usually holds a password.
    """
    stripped = text.strip()
    if re.match(r"^postgres(ql)?://", stripped, re.IGNORECASE):
        pairs = _url_pairs(stripped)
    elif "://" in stripped.split("=", 1)[0]:
        raise MetadataError("connectionString", "URL form must start with postgres:// or postgresql://")
    else:
        pairs = _keyword_pairs(stripped)
    params = ConnectParams()
    seen: set[str] = set()
    for raw_name, value in pairs:
        name = raw_name.lower() if raw_name.lower() in _KNOWN_OPTIONS | _RUNTIME_PARAMS else raw_name
        canonical = "database" if name == "dbname" else ("host" if name == "hostaddr" else name)
        if canonical in seen:
            raise MetadataError("connectionString", f"option {raw_name!r} is given twice")
        seen.add(canonical)
        if name in _RUNTIME_PARAMS:
            params.server_settings[name] = value
            continue
        if name not in _KNOWN_OPTIONS:
            supported = ", ".join(sorted(_KNOWN_OPTIONS | _RUNTIME_PARAMS))
            raise MetadataError(
                "connectionString",
                f"option {raw_name!r} is not supported by this server (supported: {supported})",
            )
        match canonical:
            case "host":
                if "," in value:
                    raise MetadataError("connectionString", "lists several hosts; only one host is supported")
                params.host = value or None
            case "port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise MetadataError("connectionString", "port must be a number from 1 to 65535")
                params.port = int(value)
            case "user":
                params.user = value
            case "password":
                params.password = value
            case "database":
                params.database = value
            case "sslmode":
                if value not in _SSL_MODES:
                    raise MetadataError("connectionString", f"sslmode must be one of {', '.join(_SSL_MODES)}")
                params.sslmode = value
            case "sslrootcert" | "sslcert" | "sslkey" | "sslpassword":
                setattr(params, canonical, value or None)
            case "connect_timeout":
                try:
                    seconds = parse_duration(value)
                except ValueError:
                    raise MetadataError("connectionString", "connect_timeout must be seconds") from None
                params.connect_timeout = seconds if seconds > 0 else None
            case "pool_max_conns" | "pool_min_conns":
                if not value.isdigit():
                    raise MetadataError("connectionString", f"{canonical} must be a non-negative integer")
                if canonical == "pool_max_conns":
                    params.pool_max = int(value)
                else:
                    params.pool_min = int(value)
            case "pool_max_conn_idle_time":
                try:
                    params.pool_idle = parse_duration(value)
                except ValueError:
                    raise MetadataError(
                        "connectionString", "pool_max_conn_idle_time must be a duration"
                    ) from None
    if params.sslkey and not params.sslcert:
        raise MetadataError("connectionString", "sslkey needs sslcert")
    return params


def quote_table(name: str) -> str:
    """A validated, lower-cased (as PostgreSQL folds unquoted names) and quoted table name."""
    if not re.fullmatch(TABLE_PATTERN, name):
        raise MetadataError("tableName", f"{name!r} is not a valid table name")
    return ".".join(f'"{part.lower()}"' for part in name.split("."))


# -- JSON documents ----------------------------------------------------------------------------------


def _has_nul(doc: Any) -> bool:
    if isinstance(doc, str):
        return "\x00" in doc
    if isinstance(doc, list):
        return any(_has_nul(v) for v in doc)
    if isinstance(doc, dict):
        return any("\x00" in k or _has_nul(v) for k, v in doc.items())
    return False


def json_doc(value: bytes) -> str | None:
    """The value as JSON text for the `doc` column, or None when it is not JSON jsonb can hold."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if b"\\u0000" in value and _has_nul(doc):
        return None  # jsonb cannot hold NUL characters
    return value.decode()


# -- query translation -------------------------------------------------------------------------------


class _SQL:
    """Collects parameters while a query is translated."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def param(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def path(self, path: Sequence[str]) -> str:
        """The jsonb at `path` of `doc`, NULL when missing or when an intermediate is not an object."""
        expr = f"doc #> {self.param(list(path), 'text[]')}"
        if not any(re.fullmatch(r"-?\d+", part) for part in path):
            return f"({expr})"
        # `#>` would index arrays with numeric segments; paths only ever name object keys.
        guards = [
            f"jsonb_typeof(doc #> {self.param(list(path[:i]), 'text[]')}) = 'object'"
            for i in range(len(path))
        ]
        return f"(CASE WHEN {' AND '.join(guards)} THEN {expr} END)"


def _json_text(value: q.Scalar) -> str:
    return orjson.dumps(value).decode()


def _filter_sql(flt: q.Filter, sql: _SQL) -> str:
    match flt:
        case q.Logical(op=op, children=children):
            joiner = " AND " if op is q.Op.AND else " OR "
            return "(" + joiner.join(_filter_sql(c, sql) for c in children) + ")"
        case q.In(path=path, values=values):
            x = sql.path(path)
            return f"({x} = ANY({sql.param([_json_text(v) for v in values], 'jsonb[]')}))"
        case q.Compare(op=op, path=path, value=value):
            x = sql.path(path)
            if op is q.Op.EQ:
                return f"({x} = {sql.param(_json_text(value), 'jsonb')})"
            if op is q.Op.NEQ:
                return f"({x} <> {sql.param(_json_text(value), 'jsonb')})"
            symbol = {q.Op.GT: ">", q.Op.GTE: ">=", q.Op.LT: "<", q.Op.LTE: "<="}[op]
            if isinstance(value, str):
                return (
                    f"(jsonb_typeof({x}) = 'string' AND "
                    f'({x} #>> \'{{}}\') COLLATE "C" {symbol} {sql.param(value, "text")} COLLATE "C")'
                )
            return f"(jsonb_typeof({x}) = 'number' AND {x} {symbol} {sql.param(_json_text(value), 'jsonb')})"
    raise AssertionError(f"unknown filter {flt!r}")


def _order_sql(sort: Sequence[q.SortKey], sql: _SQL) -> str:
    parts: list[str] = []
    for sk in sort:
        x = sql.path(sk.path)
        direction = " DESC" if sk.descending else ""
        kind = f"jsonb_typeof({x})"
        parts += [
            f"(CASE {kind} WHEN 'boolean' THEN 1 WHEN 'number' THEN 2 WHEN 'string' THEN 3 "
            f"WHEN 'object' THEN 4 WHEN 'array' THEN 4 ELSE 0 END){direction}",
            f"(CASE WHEN {kind} = 'boolean' THEN ({x})::boolean END){direction}",
            f"(CASE WHEN {kind} = 'number' THEN ({x})::numeric END){direction}",
            f"(CASE WHEN {kind} = 'string' THEN ({x} #>> '{{}}') END) COLLATE \"C\"{direction}",
            f"(CASE WHEN {kind} IN ('object', 'array') THEN ({x})::text END) COLLATE \"C\"{direction}",
        ]
    parts.append('key COLLATE "C"')
    return ", ".join(parts)


def build_query(table: str, query: q.Query, key_prefix: str) -> tuple[str, list[Any]]:
    """SQL and its parameters for one page of a query over `table`."""
    sql = _SQL()
    where = [
        "doc IS NOT NULL",
        f"starts_with(key, {sql.param(key_prefix, 'text')})",
        "(expiredate IS NULL OR expiredate > now())",
    ]
    if query.filter is not None:
        where.append(_filter_sql(query.filter, sql))
    order = _order_sql(query.sort, sql)
    text = f"SELECT key, value, etag FROM {table} WHERE {' AND '.join(where)} ORDER BY {order}"
    if query.limit:
        text += f" LIMIT {int(query.limit)}"
    if query.offset:
        text += f" OFFSET {int(query.offset)}"
    return text, sql.args


# -- the store ---------------------------------------------------------------------------------------

_REQUIRED_COLUMNS = ("key", "value", "doc", "etag", "expiredate")
_EXPIRY = "CASE WHEN $5::integer > 0 THEN now() + make_interval(secs => $5::integer) END"
_LIVE = "(expiredate IS NULL OR expiredate > now())"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of a stray transaction.

    asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is one more round trip
    on every release, which doubled the statements of every GET. This store leaves no session state:
    its only advisory lock is transaction-scoped, and it never LISTENs, SETs or keeps cursors.
    """


def _count(status: str) -> int:
    """Rows affected, from a command status such as "INSERT 0 1" or "UPDATE 3"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresStore:
    features: frozenset[Feature] = SCHEMA.features

    def __init__(self, config: StoreConfig) -> None:
        md = config.metadata
        self._name = config.name
        self.params = parse_connection_string(md["connectionString"])
        self.table = quote_table(md["tableName"])
        try:
            self.metadata_table = quote_table(md["metadataTableName"])
        except MetadataError as exc:
            raise MetadataError("metadataTableName", exc.reason) from None
        self._table_name: str = md["tableName"].lower()
        self._timeout: float = md["timeout"]
        self._cleanup_interval: float = md["cleanupInterval"]
        self._max_conns: int = md["maxConns"] or self.params.pool_max or max(4, os.cpu_count() or 1)
        self._min_conns: int = min(self.params.pool_min or 0, self._max_conns)
        self._idle: float = (
            md["connectionMaxIdleTime"] if self.params.pool_idle is None else self.params.pool_idle
        )
        self._statement_cache = 100 if md["queryExecMode"] in ("", "cache_statement") else 0
        self._pool: asyncpg.Pool | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._sql = self._statements()

    def _statements(self) -> dict[str, str]:
        t = self.table
        columns = "key, value, doc, etag, expiredate"
        values = f"$1, $2, $3::jsonb, $4, {_EXPIRY}"
        update = "value = excluded.value, doc = excluded.doc, etag = excluded.etag, updatedate = now(), "
        update += "expiredate = excluded.expiredate"
        return {
            "get": (
                f"SELECT value, etag, extract(epoch FROM expiredate)::float8 FROM {t} "
                f"WHERE key = $1 AND {_LIVE}"
            ),
            "bulk_get": (
                f"SELECT key, value, etag, extract(epoch FROM expiredate)::float8 FROM {t} "
                f"WHERE key = ANY($1::text[]) AND {_LIVE}"
            ),
            "upsert": (
                f"INSERT INTO {t} ({columns}) VALUES ({values}) ON CONFLICT (key) DO UPDATE SET {update}"
            ),
            "insert_first": (
                f"INSERT INTO {t} ({columns}) VALUES ({values}) ON CONFLICT (key) DO UPDATE SET {update} "
                f"WHERE {t}.expiredate IS NOT NULL AND {t}.expiredate <= now()"
            ),
            "update_etag": (
                f"UPDATE {t} SET value = $2, doc = $3::jsonb, etag = $4, updatedate = now(), "
                f"expiredate = {_EXPIRY} WHERE key = $1 AND etag = $6 AND {_LIVE}"
            ),
            "delete": f"DELETE FROM {t} WHERE key = $1",
            "delete_etag": f"DELETE FROM {t} WHERE key = $1 AND etag = $2 AND {_LIVE}",
        }

    # -- connection --------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> BackendUnavailable | None:
        import asyncpg

        where = f"postgresql {self.params.describe()}"
        if isinstance(exc, TimeoutError):
            return BackendUnavailable(f"{where} did not answer within {self._timeout:g}s")
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
            return BackendUnavailable(f"{where}: authentication failed: {exc}")
        if isinstance(
            exc,
            OSError
            | ConnectionError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.CannotConnectNowError
            | asyncpg.AdminShutdownError
            | asyncpg.CrashShutdownError
            | asyncpg.TooManyConnectionsError,
        ):
            return BackendUnavailable(f"{where} is unavailable: {exc}")
        if isinstance(exc, asyncpg.InternalClientError) and "closed" in str(exc):
            return BackendUnavailable(f"{where} is unavailable: {exc}")
        return None

    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]], retries: int = 0) -> T:
        """Run `work` on a pooled connection within the timeout; map failures to store errors.

        Deadlocks and serialization failures are retried `retries` times (for transactions).
        """
        import asyncpg

        if self._pool is None:
            raise BackendUnavailable("the PostgreSQL store is not initialised")
        attempt = 0
        while True:
            try:
                return await self._on_connection(self._pool, work)
            except StoreError:
                raise
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                if attempt >= retries:
                    raise StoreError(f"postgresql: {exc}") from None
                attempt += 1
                await asyncio.sleep(0.01 * attempt)
            except Exception as exc:
                mapped = self._unavailable(exc)
                if mapped is not None:
                    raise mapped from None
                if isinstance(exc, asyncpg.PostgresError):
                    raise StoreError(f"postgresql: {exc}") from None
                raise

    async def _on_connection(
        self, pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """`work` on a pooled connection, the whole call (release included) bounded by the timeout.

        A connection whose call did not finish cleanly is terminated (no network round trip) rather
        than reset and reused: resetting it would wait on a server that may not answer.
        """
        import asyncpg

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        async with asyncio.timeout_at(deadline):
            conn = await pool.acquire()
        clean = False
        try:
            async with asyncio.timeout_at(deadline):
                result = await work(conn)
            clean = True
            return result
        except (StoreError, asyncpg.PostgresError) as exc:
            clean = self._unavailable(exc) is None  # the server answered: the connection is fine
            raise
        finally:
            if not clean:
                conn.terminate()
            try:
                await pool.release(conn, timeout=max(deadline - loop.time(), 0.1))
            except Exception:
                conn.terminate()

    async def init(self) -> None:
        import asyncpg

        if self._pool is None:
            p = self.params
            self._pool = asyncpg.create_pool(
                host=p.host,
                port=p.port,
                user=p.user,
                password=p.password,
                database=p.database,
                ssl=p.ssl(),
                timeout=min(p.connect_timeout or self._timeout, self._timeout),
                command_timeout=self._timeout,
                server_settings=p.server_settings or None,
                min_size=self._min_conns,
                max_size=self._max_conns,
                max_inactive_connection_lifetime=self._idle if self._idle > 0 else 0,
                statement_cache_size=self._statement_cache,
                reset=_keep_session,
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await self._pool
            except Exception as exc:
                pool, self._pool = self._pool, None
                pool.terminate()
                mapped = self._unavailable(exc)
                if mapped is not None:
                    raise mapped from None
                raise
        await self._call(self._migrate, retries=3)
        if self._cleanup_interval > 0 and self._cleaner is None:
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_periodically())

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        m, t = self.metadata_table, self.table
        index = '"' + (self._table_name.rsplit(".", 1)[-1][:40] + "_expiredate_idx") + '"'
        async with conn.transaction():
            # One replica at a time creates the tables.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"statestore-migrate:{t}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {m} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                "key text NOT NULL PRIMARY KEY, value bytea NOT NULL, doc jsonb, etag text NOT NULL, "
                "insertdate timestamptz NOT NULL DEFAULT now(), updatedate timestamptz, "
                "expiredate timestamptz)"
            )
            rows = await conn.fetch(
                "SELECT attname FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                t,
            )
            missing = set(_REQUIRED_COLUMNS) - {r["attname"] for r in rows}
            if missing:
                raise StoreError(
                    f"table {self._table_name} exists but was not created by this server "
                    f"(no column {', '.join(sorted(missing))}); choose another tableName"
                )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {index} ON {t} (expiredate) WHERE expiredate IS NOT NULL"
            )

    async def close(self) -> None:
        cleaner, self._cleaner = self._cleaner, None
        if cleaner is not None:
            cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(5):
                    await pool.close()
            except Exception:
                pool.terminate()

    async def ping(self) -> None:
        async def ping(conn: asyncpg.Connection) -> None:
            await conn.fetchval("SELECT 1")

        await self._call(ping)

    # -- expiry cleanup ------------------------------------------------------------------------------
    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self.cleanup()
            except StoreError as exc:
                log.warning("postgresql %s: expired-row cleanup failed: %s", self._name, exc)

    async def cleanup(self, force: bool = False) -> int:
        """Delete expired rows, unless another replica did within the cleanup interval; the count."""
        interval = 0.0 if force else max(self._cleanup_interval - 1.0, 0.0)

        async def clean(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                claimed = await conn.execute(
                    f"INSERT INTO {self.metadata_table} (key, value) VALUES ($1, now()::text) "
                    f"ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                    f"WHERE {self.metadata_table}.value::timestamptz < now() - make_interval(secs => $2)",
                    f"last-cleanup-{self._table_name}",
                    interval,
                )
                if _count(claimed) == 0:
                    return 0
                deleted = await conn.execute(
                    f"DELETE FROM {self.table} WHERE expiredate IS NOT NULL AND expiredate <= now()"
                )
                return _count(deleted)

        return await self._call(clean, retries=1)

    # -- reads ---------------------------------------------------------------------------------------
    async def get(self, key: str) -> Item | None:
        if "\x00" in key:
            return None  # never stored: PostgreSQL text cannot hold NUL characters

        async def get(conn: asyncpg.Connection) -> Item | None:
            row = await conn.fetchrow(self._sql["get"], key)
            return None if row is None else Item(bytes(row[0]), row[1], row[2])

        return await self._call(get)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        unique = [k for k in dict.fromkeys(keys) if "\x00" not in k]  # keys with NUL are never stored
        if not unique:
            return {}

        async def bulk(conn: asyncpg.Connection) -> dict[str, Item]:
            rows = await conn.fetch(self._sql["bulk_get"], unique)
            return {r[0]: Item(bytes(r[1]), r[2], r[3]) for r in rows}

        return await self._call(bulk)

    # -- writes --------------------------------------------------------------------------------------
    async def _apply(self, conn: asyncpg.Connection, op: Operation) -> None:
        import asyncpg

        if "\x00" in op.key:
            # PostgreSQL text cannot hold NUL characters: such a key is never stored, so it is absent.
            if op.etag:
                raise EtagMismatch(f"etag mismatch for key {op.key!r}")
            if isinstance(op, SetRequest):
                raise StoreError("PostgreSQL cannot store keys containing NUL characters")
            return
        try:
            await self._write(conn, op)
        except asyncpg.ProgramLimitExceededError:
            raise StoreError(
                f"the key is too long for PostgreSQL's primary key index ({len(op.key.encode())} bytes; "
                "at most about 2700 bytes fit)"
            ) from None

    async def _write(self, conn: asyncpg.Connection, op: Operation) -> None:
        if isinstance(op, SetRequest):
            ttl = op.ttl if op.ttl is not None and op.ttl > 0 else None
            args = (op.key, op.value, json_doc(op.value), str(uuid.uuid4()), ttl)
            if op.etag:
                status = await conn.execute(self._sql["update_etag"], *args, op.etag)
                if _count(status) == 0:
                    raise EtagMismatch(f"etag mismatch for key {op.key}")
            elif op.concurrency is Concurrency.FIRST_WRITE:
                status = await conn.execute(self._sql["insert_first"], *args)
                if _count(status) == 0:
                    raise EtagMismatch(f"key {op.key} already exists and first-write was requested")
            else:
                await conn.execute(self._sql["upsert"], *args)
        elif op.etag:
            status = await conn.execute(self._sql["delete_etag"], op.key, op.etag)
            if _count(status) == 0:
                raise EtagMismatch(f"etag mismatch for key {op.key}")
        else:
            await conn.execute(self._sql["delete"], op.key)

    async def set(self, request: SetRequest) -> None:
        await self._call(lambda conn: self._apply(conn, request))

    async def delete(self, request: DeleteRequest) -> None:
        await self._call(lambda conn: self._apply(conn, request))

    async def transact(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                for op in operations:
                    await self._apply(conn, op)

        await self._call(run, retries=3)

    # -- query ---------------------------------------------------------------------------------------
    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        text, args = build_query(self.table, query, key_prefix)

        async def run(conn: asyncpg.Connection) -> list[QueryItem]:
            rows = await conn.fetch(text, *args)
            return [QueryItem(r[0], bytes(r[1]), r[2]) for r in rows]

        items = await self._call(run)
        return QueryPage(items, q.next_token(query, len(items)))


def create(config: StoreConfig) -> PostgresStore:
    return PostgresStore(config)
