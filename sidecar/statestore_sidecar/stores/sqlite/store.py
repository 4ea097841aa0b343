"""`state.sqlite`: state in an SQLite database file (or in memory); the embedded default store.

The tables are laid out exactly as Dapr's `state.sqlite` lays them out (`key`, `value`, `is_binary`,
`etag`, `expiration_time`, `update_time`; a metadata table holding `migrations = 1`), so a database
file can move between daprd and this server (column formats in `dialect.py`).

* Etags are random UUIDs, new on every write. Etag and first-write rules are enforced by the SQL
  statements themselves (the shared write ladder of `sql/writes.py`), and an expired row counts as
  absent everywhere.
* Connections are owned by threads (`threads.py`). Between processes, SQLite's busy handler waits up
  to `busyTimeout` for the write lock, and transactions take it up front with `BEGIN IMMEDIATE`.
* Every operation has a deadline of `timeout`: statements are interrupted once it passes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import orjson

from ... import query as q
from .. import StoreConfig
from ..base import (
    BackendUnavailable,
    DeleteRequest,
    Item,
    Operation,
    QueryError,
    QueryItem,
    QueryPage,
    SetRequest,
    StoreError,
    expiry,
)
from ..sql import writes
from ..sql.cleanup import Cleaner, claim_window
from . import functions
from .dialect import build_query, decode, encode, stamp, unstamp
from .metadata import SCHEMA, Target, parse_connection_string, quote_ident
from .threads import Lane, Mode, Timeout, Writer

log = logging.getLogger("statestore.sqlite")

_READER_THREADS = 2
_MIGRATION_LEVEL = 1

T = TypeVar("T")


def bulk_get_sql(table: str) -> str:
    """The one SELECT of a bulk get: the keys as a JSON array, then the current time."""
    return (
        f"SELECT key, CAST(value AS BLOB), is_binary, etag, expiration_time FROM {quote_ident(table)}"
        " WHERE key IN (SELECT j.value FROM json_each(?) AS j)"
        " AND (expiration_time IS NULL OR expiration_time > ?)"
    )


class SQLiteStore:
    features = SCHEMA.features

    def __init__(self, config: StoreConfig) -> None:
        md = config.metadata
        self._name = config.name
        self._connection_string = str(md["connectionString"])
        self._table_name = str(md["tableName"])
        self._metadata_table_name = str(md["metadataTableName"])
        self._timeout = float(md["timeout"])
        # Waiting for another connection's lock is part of an operation, so it ends by `timeout` too.
        self._busy = min(max(0.0, math.floor(float(md["busyTimeout"]) * 1000) / 1000), self._timeout)
        self._cleanup_interval = float(md["cleanupInterval"])
        self._disable_wal = bool(md["disableWAL"])
        self._grace = self._busy + 5.0
        self._writer: Writer | None = None
        self._reader: Lane | Writer | None = None
        self._cleaner = Cleaner(self._name, self._cleanup_interval, self.cleanup_expired)
        self._target: Target = parse_connection_string(self._connection_string)
        self._prepare_sql()

    def _prepare_sql(self) -> None:
        t = quote_ident(self._table_name)
        live = "(expiration_time IS NULL OR expiration_time > ?)"
        columns = "(key, value, is_binary, etag, expiration_time, update_time)"
        self._sql_get = (
            f"SELECT CAST(value AS BLOB), is_binary, etag, expiration_time FROM {t} WHERE key = ? AND {live}"
        )
        self._sql_bulk_get = bulk_get_sql(self._table_name)
        upsert = (
            f"INSERT INTO {t} {columns} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, is_binary = excluded.is_binary, etag = excluded.etag,"
            " expiration_time = excluded.expiration_time, update_time = excluded.update_time"
        )
        # Parameters: key, value, is_binary, new etag, expiration_time, now, [etag], [now].
        self._sql = {
            writes.Statement.UPSERT: upsert,
            # Insert, or replace only a row that has expired.
            writes.Statement.INSERT_FIRST: (
                upsert + f" WHERE {t}.expiration_time IS NOT NULL AND {t}.expiration_time <= ?"
            ),
            writes.Statement.UPDATE_ETAG: (
                f"UPDATE {t} SET value = ?2, is_binary = ?3, etag = ?4, expiration_time = ?5,"
                f" update_time = ?6 WHERE key = ?1 AND etag = ?7"
                " AND (expiration_time IS NULL OR expiration_time > ?6)"
            ),
            writes.Statement.DELETE: f"DELETE FROM {t} WHERE key = ?",
            writes.Statement.DELETE_ETAG: (
                f"DELETE FROM {t} WHERE key = ?1 AND etag = ?2 AND (expiration_time IS NULL OR expiration_time > ?3)"
            ),
        }
        self._sql_sweep = f"DELETE FROM {t} WHERE expiration_time IS NOT NULL AND expiration_time <= ?"
        m = quote_ident(self._metadata_table_name)
        self._sql_mark_cleanup = (
            f"INSERT INTO {m} (key, value) VALUES ('last-cleanup', ?) ON CONFLICT (key) DO UPDATE"
            f" SET value = excluded.value WHERE julianday({m}.value) IS NULL"
            f" OR (julianday(excluded.value) - julianday({m}.value)) * 86400000.0 >= ?"
        )

    # --- lifecycle ---

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        target = self._target
        assert target is not None
        try:
            conn = sqlite3.connect(
                target.database,
                uri=target.uri,
                timeout=self._busy,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(
                f"cannot open the SQLite database {self._connection_string!r}: {exc}"
            ) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy * 1000)}")
            for pragma in target.pragmas:
                conn.execute(pragma)
            if not writer:
                conn.execute("PRAGMA query_only = 1")
            functions.register(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        target = self._target
        assert target is not None
        if not target.in_memory and not target.read_only:
            mode = "DELETE" if self._disable_wal else "WAL"
            (current,) = conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()
            if str(current).upper() != mode:
                log.warning("sqlite store %s: journal mode is %s, not %s", self._name, current, mode)
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        state, meta = quote_ident(self._table_name), quote_ident(self._metadata_table_name)

        def table_exists(name: str) -> bool:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
            return row.fetchone() is not None

        def level() -> int:
            if not table_exists(self._metadata_table_name):
                return 0
            row = conn.execute(f"SELECT value FROM {meta} WHERE key = 'migrations'").fetchone()
            try:
                return int(row[0]) if row is not None else 0
            except (TypeError, ValueError):
                raise StoreError(f"invalid migration level {row[0]!r} in table {meta}") from None

        if level() >= _MIGRATION_LEVEL and table_exists(self._table_name):
            return
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {state} ("
            " key TEXT NOT NULL PRIMARY KEY,"
            " value TEXT NOT NULL,"
            " is_binary BOOLEAN NOT NULL,"
            " etag TEXT NOT NULL,"
            " expiration_time TIMESTAMP DEFAULT NULL,"
            " update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        conn.execute(
            f'CREATE INDEX IF NOT EXISTS "idx_{self._table_name}_expiration_time"'
            f" ON {state} (expiration_time)"
        )
        if level() < _MIGRATION_LEVEL:
            conn.execute(
                f"INSERT OR REPLACE INTO {meta} (key, value) VALUES ('migrations', ?)",
                (str(_MIGRATION_LEVEL),),
            )
        conn.execute("COMMIT")

    async def init(self) -> None:
        if self._writer is not None:
            return
        target = self._target
        try:
            await asyncio.to_thread(target.create_folder)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create the folder of the SQLite database: {exc}") from None
        writer = Writer(f"sqlite-{self._name}-w", functools.partial(self._connect, writer=True))
        try:
            await self._call(writer, self._setup)
        except BaseException:
            await asyncio.to_thread(writer.shutdown)
            raise
        self._writer = writer
        self._reader = (
            writer
            if target.in_memory
            else Lane(
                f"sqlite-{self._name}-r", _READER_THREADS, functools.partial(self._connect, writer=False)
            )
        )
        self._cleaner.start()

    async def close(self) -> None:
        await self._cleaner.stop()
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            await asyncio.to_thread(reader.shutdown)
        if writer is not None:
            await asyncio.to_thread(writer.shutdown)

    async def ping(self) -> None:
        await self._call(self._lane(read=True), lambda conn: conn.execute("SELECT 1").fetchone())

    # --- calls ---

    def _lane(self, *, read: bool) -> Lane | Writer:
        lane = self._reader if read else self._writer
        if lane is None:
            raise BackendUnavailable(f"the SQLite store {self._name} is not initialised")
        return lane

    async def _call(
        self, lane: Lane | Writer, fn: Callable[[sqlite3.Connection], T], mode: Mode = Mode.ALONE
    ) -> T:
        try:
            return await lane.call(fn, self._timeout, self._grace, mode)
        except Timeout:
            raise BackendUnavailable(
                f"the SQLite database did not answer within {self._timeout:g}s"
            ) from None
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_INTERRUPT:
            return BackendUnavailable(f"the SQLite database did not answer within {self._timeout:g}s")
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return BackendUnavailable(
                "the SQLite database is locked by another connection"
                f" for longer than busyTimeout ({self._busy:g}s)"
            )
        if code in (
            sqlite3.SQLITE_CANTOPEN,
            sqlite3.SQLITE_IOERR,
            sqlite3.SQLITE_FULL,
            sqlite3.SQLITE_READONLY,
            sqlite3.SQLITE_CORRUPT,
            sqlite3.SQLITE_NOTADB,
            sqlite3.SQLITE_PERM,
            sqlite3.SQLITE_NOMEM,
            sqlite3.SQLITE_PROTOCOL,
        ):
            return BackendUnavailable(f"SQLite database {self._connection_string!r}: {exc}")
        return StoreError(f"SQLite: {exc}")

    # --- reads ---

    async def get(self, key: str) -> Item | None:
        def run(conn: sqlite3.Connection) -> Item | None:
            row = conn.execute(self._sql_get, (key, stamp(time.time()))).fetchone()
            if row is None:
                return None
            return Item(decode(row[0], row[1]), str(row[2]), unstamp(row[3]))

        return await self._call(self._lane(read=True), run)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        if not keys:
            return {}
        # json_each ends a text at its first NUL character, so keys holding one are read one by one.
        plain = [k for k in keys if "\x00" not in k]
        with_nul = [k for k in keys if "\x00" in k]
        wanted = orjson.dumps(plain).decode("utf-8")

        def run(conn: sqlite3.Connection) -> dict[str, Item]:
            now = stamp(time.time())
            rows = conn.execute(self._sql_bulk_get, (wanted, now)).fetchall() if plain else []
            found = {str(r[0]): Item(decode(r[1], r[2]), str(r[3]), unstamp(r[4])) for r in rows}
            for key in with_nul:
                row = conn.execute(self._sql_get, (key, now)).fetchone()
                if row is not None:
                    found[key] = Item(decode(row[0], row[1]), str(row[2]), unstamp(row[3]))
            return found

        return await self._call(self._lane(read=True), run)

    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        def run(conn: sqlite3.Connection) -> list[QueryItem]:
            sql, params = build_query(self._table_name, query, key_prefix, time.time())
            rows = conn.execute(sql, params).fetchall()
            return [QueryItem(str(r[0]), bytes(r[1]), str(r[2])) for r in rows]

        try:
            items = await self._call(self._lane(read=True), run)
        except OverflowError as exc:  # a page offset or limit beyond 64 bits
            raise QueryError(f"query page out of range: {exc}") from None
        return QueryPage(items, q.next_token(query, len(items)))

    # --- writes ---

    def _write(self, conn: sqlite3.Connection, op: Operation, now: float) -> None:
        """One set or delete, by the shared write ladder."""
        step = writes.step(op)
        at = stamp(now)
        args: tuple[object, ...]
        if step.statement is writes.Statement.DELETE:
            args = (op.key,)
        elif step.statement is writes.Statement.DELETE_ETAG:
            args = (op.key, op.etag, at)
        else:
            assert isinstance(op, SetRequest)
            value, is_binary = encode(op.value)
            expires = expiry(op.ttl, now)
            args = (
                op.key,
                value,
                is_binary,
                str(uuid.uuid4()),
                stamp(expires) if expires is not None else None,
                at,
            )
            if step.statement is writes.Statement.UPDATE_ETAG:
                args += (op.etag,)
            elif step.statement is writes.Statement.INSERT_FIRST:
                args += (at,)
        step.check(conn.execute(self._sql[step.statement], args).rowcount)

    async def set(self, request: SetRequest) -> None:
        await self._call(
            self._lane(read=False), lambda conn: self._write(conn, request, time.time()), Mode.STATEMENT
        )

    async def delete(self, request: DeleteRequest) -> None:
        await self._call(
            self._lane(read=False), lambda conn: self._write(conn, request, time.time()), Mode.STATEMENT
        )

    async def transact(self, operations: Sequence[Operation]) -> None:
        ops = list(operations)
        if not ops:
            return

        def run(conn: sqlite3.Connection) -> None:
            # The writer runs this inside a transaction (or a savepoint of a group commit).
            now = time.time()
            for op in ops:
                self._write(conn, op, now)

        mode = Mode.STATEMENT if len(ops) == 1 else Mode.TRANSACTION
        await self._call(self._lane(read=False), run, mode)

    # --- expired rows ---

    async def cleanup_expired(self, force: bool = False) -> int:
        """Delete expired rows, unless a cleanup (of any process) ran within the interval; the count."""
        window = 0.0 if force else claim_window(self._cleanup_interval)

        def sweep(conn: sqlite3.Connection) -> int:
            now = stamp(time.time())
            marked = conn.execute(self._sql_mark_cleanup, (now, window * 1000.0)).rowcount
            return int(conn.execute(self._sql_sweep, (now,)).rowcount) if marked else 0

        return await self._call(self._lane(read=False), sweep, Mode.TRANSACTION)


def create(config: StoreConfig) -> SQLiteStore:
    return SQLiteStore(config)
