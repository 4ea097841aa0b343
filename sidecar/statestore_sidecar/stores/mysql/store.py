"""`state.mysql`: state in a table of a MySQL-protocol server (tested against MariaDB only: Debian ships
no Oracle MySQL server), through an aiomysql connection pool.

The tables are daprd's `state.mysql` layout (`migrations.py`), so daprd and this server share a
database in either direction: JSON values in `value` (MariaDB keeps JSON text as given; Oracle
MySQL would normalise it, untested), other bytes as a base64 JSON string with `isbinary` set, a UUID `eTag` per
write, `expiredate TIMESTAMP` (whole seconds, rounded up; NULL: never expires; TIMESTAMP ends in
January 2038, so a TTL reaching past it is refused). A table of this server's earlier layout is
converted on start.

* Etag rules are enforced inside single statements (the shared ladder of `sql/writes.py`), so row
  locks serialise writers.
* Transactions run in one database transaction, in order; a refused operation rolls back all.
* Expired rows are filtered on every read and deleted every `cleanupInterval` by one replica (the
  `last-cleanup` row daprd uses too).
* Query translates the shared query tree to SQL over `value` (`dialect.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from ... import query as q
from .. import StoreConfig
from ..base import (
    BackendUnavailable,
    DeleteRequest,
    Feature,
    Item,
    Operation,
    QueryItem,
    QueryPage,
    SetRequest,
    StoreError,
)
from ..sql import writes
from ..sql.cleanup import Cleaner, claim_window
from . import migrations
from .dialect import EXPIRY, LIVE, binary_doc, build_query, json_doc, stored_bytes
from .metadata import SCHEMA, parse_connection_string, quote_ident

log = logging.getLogger(__name__)

T = TypeVar("T")

# TIMESTAMP's last second (2038-01-19T03:14:07Z): expiries must come before it.
_TIMESTAMP_END = 2_147_483_647
_MAX_KEY = 255  # characters of daprd's `id VARCHAR(255)`
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
        self.dsn = parse_connection_string(md["connectionString"])
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
        self._max_conns: int = md["maxOpenConns"] or max(4, os.cpu_count() or 1)
        self._idle: float = md["connMaxIdleTime"]
        self._pool: Any = None
        self._cleaner = Cleaner(self._name, self._cleanup_interval, self.cleanup_expired)
        self._sql = self._statements()

    def _statements(self) -> dict[str, str]:
        t = self.table
        insert = f"INSERT INTO {t} (id, value, isbinary, eTag, expiredate) VALUES (%s, %s, %s, %s, {EXPIRY})"
        expired = "(expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP)"
        # expiredate is assigned last: MySQL evaluates the assignments left to right.
        first = ", ".join(
            f"{c} = IF({expired}, VALUES({c}), {c})" for c in ("value", "isbinary", "eTag", "expiredate")
        )
        read = "value, isbinary, eTag, UNIX_TIMESTAMP(expiredate)"
        return {
            "get": f"SELECT {read} FROM {t} WHERE id = %s AND {LIVE}",
            "bulk_get": f"SELECT id, {read} FROM {t} WHERE id IN ({{marks}}) AND {LIVE}",
            "upsert": (
                f"{insert} ON DUPLICATE KEY UPDATE value = VALUES(value), isbinary = VALUES(isbinary), "
                "eTag = VALUES(eTag), expiredate = VALUES(expiredate)"
            ),
            "insert_first": f"{insert} ON DUPLICATE KEY UPDATE {first}",
            "update_etag": (
                f"UPDATE {t} SET value = %s, isbinary = %s, eTag = %s, expiredate = {EXPIRY} "
                f"WHERE id = %s AND eTag = %s AND {LIVE}"
            ),
            "delete": f"DELETE FROM {t} WHERE id = %s",
            "delete_etag": f"DELETE FROM {t} WHERE id = %s AND eTag = %s AND {LIVE}",
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
        self._cleaner.start()

    async def _migrate(self, conn: Any) -> None:
        async with conn.cursor() as cur:
            await migrations.migrate(
                cur,
                schema=self.schema_name,
                table=self.table,
                table_name=self.table_name,
                metadata_table=self.metadata_table,
                metadata_name=self.metadata_table_name,
            )

    async def close(self) -> None:
        await self._cleaner.stop()
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
    async def cleanup_expired(self, force: bool = False) -> int:
        """Delete expired rows, unless another replica did within the cleanup interval; the count."""
        interval_ms = 0 if force else int(claim_window(self._cleanup_interval) * 1000)

        async def clean(conn: Any) -> int:
            async with conn.cursor() as cur:
                # daprd's claim: the same row, so daprd's replicas and ours take turns.
                claimed = await cur.execute(
                    f"INSERT INTO {self.metadata_table} (id, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP) "
                    "ON DUPLICATE KEY UPDATE value = IF(CURRENT_TIMESTAMP > "
                    "DATE_ADD(value, INTERVAL %s*1000 MICROSECOND), CURRENT_TIMESTAMP, value)",
                    (interval_ms,),
                )
                if not claimed:
                    return 0
                deleted: int = await cur.execute(
                    f"DELETE FROM {self.table} WHERE expiredate IS NOT NULL AND expiredate <= CURRENT_TIMESTAMP"
                )
                return deleted

        return await self._call(clean, retries=1)

    # -- reads ---------------------------------------------------------------------------------------
    @staticmethod
    def _item(value: str, isbinary: int, etag: str, expires_at: Any) -> Item:
        return Item(
            stored_bytes(value, bool(isbinary)), etag, float(expires_at) if expires_at is not None else None
        )

    async def get(self, key: str) -> Item | None:
        async def get(conn: Any) -> Item | None:
            async with conn.cursor() as cur:
                await cur.execute(self._sql["get"], (key,))
                row = await cur.fetchone()
            return None if row is None else self._item(*row)

        return await self._call(get, read=True)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        text = self._sql["bulk_get"].replace("{marks}", ", ".join(["%s"] * len(unique)))

        async def bulk(conn: Any) -> dict[str, Item]:
            async with conn.cursor() as cur:
                await cur.execute(text, unique)
                rows = await cur.fetchall()
            return {str(r[0]): self._item(*r[1:]) for r in rows}

        return await self._call(bulk, read=True)

    # -- writes --------------------------------------------------------------------------------------
    async def _apply(self, cur: Any, op: Operation) -> None:
        step = writes.step(op)
        args: tuple[Any, ...] = (op.key,)
        if isinstance(op, SetRequest):
            if len(op.key) > _MAX_KEY:
                raise StoreError(
                    f"the key is too long for the MySQL table ({len(op.key)} characters with its prefix; "
                    f"daprd's id column holds at most {_MAX_KEY})"
                )
            ttl = op.ttl if op.ttl is not None and op.ttl > 0 else None
            if ttl is not None and time.time() + ttl + 1 >= _TIMESTAMP_END:
                raise StoreError(
                    f"ttlInSeconds {ttl} expires after 2038-01-19T03:14:07Z, the end of MySQL's TIMESTAMP "
                    "that daprd's table layout keeps expiry in"
                )
            doc = json_doc(op.value)
            written = (*(binary_doc(op.value) if doc is None else (doc, False)), str(uuid.uuid4()), ttl, ttl)
            args = (*written, op.key) if op.etag else (op.key, *written)
        if op.etag:
            args += (op.etag,)
        step.check(await cur.execute(self._sql[step.statement.value], args))

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
            return [QueryItem(str(r[0]), str(r[1]).encode(), r[2]) for r in rows]

        items = await self._call(run, read=True)
        return QueryPage(items, q.next_token(query, len(items)))


def create(config: StoreConfig) -> MySQLStore:
    return MySQLStore(config)
