"""`state.postgresql`: state in a PostgreSQL table, through asyncpg connections (`connections.py`).

The table is daprd's `state.postgresql` v1 layout, so daprd and this server share a database in
either direction: `key text PRIMARY KEY`, `value jsonb` (JSON values; any other bytes as a base64
JSON string with `isbinary` true), `isbinary boolean`, `insertdate`, `updatedate`, `expiredate
timestamptz` (NULL: never expires). The ETag is the row's `xmin`, as daprd's. The metadata table
holds daprd's migration level (`migrations`), its migration `lock` row and its `last-cleanup` time.
A table of this server's earlier layout (`value bytea`, `doc jsonb`, `etag`) is converted on start.

* Etag rules are enforced inside single statements (the shared ladder of `sql/writes.py`), so
  concurrent writers are serialised by row locks.
* Transactions run in one database transaction, in order; a refused operation rolls back all.
* Expired rows are filtered on every read (the server's clock), and deleted every `cleanupInterval`
  by one replica at a time (coordinated through the metadata table, as daprd does).
* Query translates the shared query tree to SQL over `value` (`dialect.py`), as daprd's v1 query.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

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
    etag_mismatch,
)
from ..sql import writes
from ..sql.cleanup import Cleaner, claim_window
from . import migrations
from .connections import Connections
from .dialect import LIVE, binary_doc, build_query, json_doc, stored_bytes
from .metadata import SCHEMA, parse_connection_string, quote_table

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

T = TypeVar("T")

_EXPIRY = "CASE WHEN $4::integer > 0 THEN now() + make_interval(secs => $4::integer) END"


def _count(status: str) -> int:
    """Rows affected, from a command status such as "INSERT 0 1" or "UPDATE 3"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresStore:
    """daprd's v1 layout; `v2.PostgresV2Store` overrides the hooks marked "layout"."""

    features: frozenset[Feature] = SCHEMA.features
    # layout: the expiry column (the metadata row that claims a cleanup turn is `cleanup_key`)
    expiry_column = "expiredate"

    def __init__(self, config: StoreConfig) -> None:
        md = config.metadata
        self._name = config.name
        self.params = parse_connection_string(md["connectionString"])
        table_name = self.table_name_of(md)
        self.table = quote_table(table_name)
        self.metadata_table = quote_table(md["metadataTableName"])
        self._table_name: str = table_name.lower()
        self.cleanup_key = "last-cleanup"
        self._timeout: float = md["timeout"]
        self._cleanup_interval: float = md["cleanupInterval"]
        self._max_conns: int = md["maxConns"] or self.params.pool_max or max(4, os.cpu_count() or 1)
        self._min_conns: int = min(self.params.pool_min or 0, self._max_conns)
        self._idle: float = (
            md["connectionMaxIdleTime"] if self.params.pool_idle is None else self.params.pool_idle
        )
        self._statement_cache = 100 if md["queryExecMode"] in ("", "cache_statement") else 0
        self._conns: Connections | None = None
        self._ssl: Any = False  # asyncpg's `ssl` argument, made at init (it may read files)
        self._cleaner = Cleaner(self._name, self._cleanup_interval, self.cleanup_expired)
        self._sql = self._statements()

    @staticmethod
    def table_name_of(md: Any) -> str:  # layout
        return str(md["tableName"])

    def _statements(self) -> dict[str, str]:  # layout
        t = self.table
        columns = "key, value, isbinary, expiredate"
        values = f"$1, $2::jsonb, $3, {_EXPIRY}"
        update = "value = excluded.value, isbinary = excluded.isbinary, updatedate = now(), "
        update += "expiredate = excluded.expiredate"
        read = "value, isbinary, xmin::text, extract(epoch FROM expiredate)::float8"
        return {
            "get": f"SELECT {read} FROM {t} WHERE key = $1 AND {LIVE}",
            "bulk_get": f"SELECT key, {read} FROM {t} WHERE key = ANY($1::text[]) AND {LIVE}",
            "upsert": (
                f"INSERT INTO {t} ({columns}) VALUES ({values}) ON CONFLICT (key) DO UPDATE SET {update}"
            ),
            "insert_first": (
                f"INSERT INTO {t} ({columns}) VALUES ({values}) ON CONFLICT (key) DO UPDATE SET {update} "
                f"WHERE {t}.expiredate IS NOT NULL AND {t}.expiredate <= now()"
            ),
            "update_etag": (
                f"UPDATE {t} SET value = $2::jsonb, isbinary = $3, updatedate = now(), "
                f"expiredate = {_EXPIRY} WHERE key = $1 AND xmin::text = $5 AND {LIVE}"
            ),
            "delete": f"DELETE FROM {t} WHERE key = $1",
            "delete_etag": f"DELETE FROM {t} WHERE key = $1 AND xmin::text = $2 AND {LIVE}",
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
        if isinstance(exc, asyncpg.InternalClientError) and (
            "closed" in str(exc) or "cannot switch to state" in str(exc)
        ):
            # The second: the server ended the session (a FATAL error came) and the socket is not
            # closed yet, so the connection looked usable when taken. The call is refused before
            # anything is sent, and the connection is terminated, not used again.
            return BackendUnavailable(f"{where} is unavailable: the server ended the connection ({exc})")
        return None

    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]], retries: int = 0) -> T:
        """Run `work` on a pooled connection within the timeout; map failures to store errors.

        Deadlocks and serialization failures are retried `retries` times (for transactions).
        """
        import asyncpg

        conns = self._conns
        if conns is None:
            raise BackendUnavailable("the PostgreSQL store is not initialised")
        attempt = 0
        while True:
            try:
                return await self._on_connection(conns, work)
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
        self, conns: Connections, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """`work` on a connection of its own, waiting for one included, within the timeout.

        A connection whose call did not finish cleanly is terminated (no network round trip) rather
        than reset and reused: resetting it would wait on a server that may not answer.
        """
        import asyncpg

        async with asyncio.timeout(self._timeout):
            conn = await conns.acquire()
            clean = False
            try:
                result = await work(conn)
                clean = True
                return result
            except (StoreError, asyncpg.PostgresError) as exc:
                clean = self._unavailable(exc) is None  # the server answered: the connection is fine
                raise
            finally:
                conns.release(conn, reuse=clean)

    async def _connect(self) -> asyncpg.Connection:
        import asyncpg

        p = self.params
        conn: asyncpg.Connection = await asyncpg.connect(
            host=p.host,
            port=p.port,
            user=p.user,
            password=p.password,
            database=p.database,
            ssl=self._ssl,
            timeout=min(p.connect_timeout or self._timeout, self._timeout),
            command_timeout=self._timeout,
            server_settings=p.server_settings or None,
            statement_cache_size=self._statement_cache,
        )
        return conn

    async def init(self) -> None:
        if self._conns is None:
            self._ssl = self.params.ssl()
            self._conns = Connections(
                self._connect,
                min_size=self._min_conns,
                max_size=self._max_conns,
                idle=self._idle if self._idle > 0 else 0,
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await self._conns.start()
            except Exception as exc:
                conns, self._conns = self._conns, None
                conns.terminate()
                mapped = self._unavailable(exc)
                if mapped is not None:
                    raise mapped from None
                raise
        await self._call(self._migrate, retries=3)
        self._cleaner.start()

    async def _migrate(self, conn: asyncpg.Connection) -> None:  # layout
        await migrations.migrate(conn, self.table, self.metadata_table, self._table_name)

    async def close(self) -> None:
        await self._cleaner.stop()
        conns, self._conns = self._conns, None
        if conns is not None:
            await conns.close()

    async def ping(self) -> None:
        async def ping(conn: asyncpg.Connection) -> None:
            await conn.fetchval("SELECT 1")

        await self._call(ping)

    # -- expiry cleanup ------------------------------------------------------------------------------
    async def cleanup_expired(self, force: bool = False) -> int:
        """Delete expired rows, unless another replica did within the cleanup interval; the count."""
        interval = 0.0 if force else claim_window(self._cleanup_interval)

        async def clean(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                claimed = await conn.execute(
                    f"INSERT INTO {self.metadata_table} (key, value) VALUES ($2, now()::text) "
                    f"ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                    f"WHERE {self.metadata_table}.value::timestamptz < now() - make_interval(secs => $1)",
                    interval,
                    self.cleanup_key,
                )
                if _count(claimed) == 0:
                    return 0
                deleted = await conn.execute(
                    f"DELETE FROM {self.table} WHERE {self.expiry_column} IS NOT NULL "
                    f"AND {self.expiry_column} <= now()"
                )
                return _count(deleted)

        return await self._call(clean, retries=1)

    # -- reads ---------------------------------------------------------------------------------------
    async def get(self, key: str) -> Item | None:
        if "\x00" in key:
            return None  # never stored: PostgreSQL text cannot hold NUL characters

        async def get(conn: asyncpg.Connection) -> Item | None:
            row = await conn.fetchrow(self._sql["get"], key)
            return None if row is None else self._item(row, 0)

        return await self._call(get)

    @staticmethod
    def _item(row: asyncpg.Record, at: int) -> Item:  # layout: what "get" selects, from `at`
        return Item(stored_bytes(row[at], row[at + 1]), row[at + 2], row[at + 3])

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        unique = [k for k in dict.fromkeys(keys) if "\x00" not in k]  # keys with NUL are never stored
        if not unique:
            return {}

        async def bulk(conn: asyncpg.Connection) -> dict[str, Item]:
            rows = await conn.fetch(self._sql["bulk_get"], unique)
            return {r[0]: self._item(r, 1) for r in rows}

        return await self._call(bulk)

    # -- writes --------------------------------------------------------------------------------------
    async def _apply(self, conn: asyncpg.Connection, op: Operation) -> None:
        import asyncpg

        if "\x00" in op.key:
            # PostgreSQL text cannot hold NUL characters: such a key is never stored, so it is absent.
            if op.etag:
                raise etag_mismatch(op.key)
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
        step = writes.step(op)
        args: tuple[object, ...] = (op.key,)
        if isinstance(op, SetRequest):
            ttl = op.ttl if op.ttl is not None and op.ttl > 0 else None
            args = (op.key, *self._value_args(op.value), ttl)
        if op.etag:
            args += (op.etag,)
        step.check(_count(await conn.execute(self._sql[step.statement.value], *args)))

    @staticmethod
    def _value_args(value: bytes) -> tuple[object, ...]:  # layout: the value's statement parameters
        doc = json_doc(value)
        return binary_doc(value) if doc is None else (doc, False)

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
            return [QueryItem(r[0], r[1].encode(), r[2]) for r in rows]

        items = await self._call(run)
        return QueryPage(items, q.next_token(query, len(items)))


def create(config: StoreConfig) -> PostgresStore:
    if config.version == "v2":
        from .v2 import PostgresV2Store

        return PostgresV2Store(config)
    return PostgresStore(config)
