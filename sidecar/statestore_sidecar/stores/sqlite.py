"""`state.sqlite`: state in an SQLite database file (or in memory); the embedded default store.

The tables are laid out exactly as Dapr's `state.sqlite` lays them out (`key`, `value`, `is_binary`,
`etag`, `expiration_time`, `update_time`; a metadata table holding `migrations = 1`), so a database
file can move between daprd and this server.

* Values are the exact bytes given. Valid UTF-8 without NUL bytes is stored as TEXT; anything else
  is stored base64-encoded with `is_binary = 1`, as Dapr stores bytes. Queries only look at TEXT
  values that are valid JSON.
* Etags are random UUIDs, new on every write. Etag and first-write rules are enforced by the SQL
  statements themselves (conditional UPDATE/DELETE, upsert that only replaces an expired row), and
  an expired row counts as absent everywhere.
* `expiration_time` is a UTC timestamp text `YYYY-MM-DD HH:MM:SS.mmm`, which orders like the
  instants it names and compares correctly with Dapr's `CURRENT_TIMESTAMP` values.
* Each connection belongs to one thread: one writer thread (all writes of this process queue there
  rather than on SQLite's lock) and, for files, a few reader threads (WAL readers never block
  writers). `:memory:` databases use the writer's single connection for everything. Between
  processes, SQLite's busy handler waits up to `busyTimeout` for the write lock, and transactions
  take it up front with `BEGIN IMMEDIATE`.
* Group commit: writes waiting together run in one transaction, each in its own savepoint (a refused
  write leaves the others alone), and are answered after the one commit, so concurrent writers share
  an fsync instead of queueing for one each.
* Every operation has a deadline of `timeout`: statements are interrupted once it passes.
* Queries run in SQL. A row without a backslash in its value has no escaped object keys, so
  `json_type`/`json_extract` with a quoted path (`$."a"."b"`) find exactly the keys Python would;
  rows with escapes, and path segments a JSON path cannot quote, use small Python functions that
  look the path up in the decoded document instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import functools
import json
import logging
import math
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import orjson

from .. import query as q
from ..schema import Field, Kind, StoreSchema
from . import StoreConfig
from .base import (
    BackendUnavailable,
    Concurrency,
    DeleteRequest,
    EtagMismatch,
    Feature,
    Item,
    Operation,
    QueryError,
    QueryItem,
    QueryPage,
    SetRequest,
    StoreError,
    expiry,
)

log = logging.getLogger("statestore.sqlite")

# Dapr's ValidIdentifier (ASCII letters, digits, underscore); SQLite reserves names starting `sqlite_`.
IDENTIFIER = r"(?!(?i:sqlite_))[A-Za-z0-9_]{1,128}"

SCHEMA = StoreSchema(
    type="state.sqlite",
    fields=(
        Field(
            "connectionString",
            required=True,
            aliases=("url",),
            description="a file path, a file: URI (query parameters allowed) or :memory:",
        ),
        Field("tableName", default="state", pattern=IDENTIFIER, description="table holding the state"),
        Field(
            "metadataTableName",
            default="metadata",
            pattern=IDENTIFIER,
            description="table holding the schema version and the last cleanup time",
        ),
        Field(
            "timeout",
            Kind.DURATION,
            default=20.0,
            aliases=("timeoutInSeconds",),
            minimum=1.0,
            description="deadline of every database operation",
        ),
        Field(
            "busyTimeout",
            Kind.DURATION,
            default=2.0,
            description="how long to wait for another connection's lock; 0 does not wait",
        ),
        Field(
            "cleanupInterval",
            Kind.DURATION,
            default=0.0,
            aliases=("cleanupIntervalInSeconds",),
            description="how often expired rows are deleted; 0 disables (they are never read anyway)",
        ),
        Field("disableWAL", Kind.BOOL, default=False, description="use a rollback journal instead of WAL"),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    aliases=("state.sqlite3",),
)

_READER_THREADS = 2
_MAX_BATCH = 256  # writes committed together at most
_MIGRATION_LEVEL = 1
_INT64 = (-(2**63), 2**63 - 1)
_NUMERIC_TYPES = "('integer','real')"
# Path segments `$."..."` can carry: SQLite 3.40 ends a quoted label at the first `"` and compares
# labels with the raw (still escaped) text of the document, so these characters need Python.
_UNQUOTABLE = re.compile(r'["\\\x00-\x1f]')
_PRAGMA = re.compile(r"([A-Za-z_]+)\(([A-Za-z0-9_.+-]*)\)")
_FORBIDDEN_PRAGMAS = {
    "busy_timeout": "use the busyTimeout metadata instead",
    "journal_mode": "use the disableWAL metadata instead",
    "foreign_keys": "it is not configurable",
    "query_only": "it is not configurable",
}

T = TypeVar("T")


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """Where to connect, from `connectionString` (Dapr's syntax, `_pragma`/`_txlock` included)."""

    database: str
    uri: bool
    in_memory: bool
    read_only: bool
    pragmas: tuple[str, ...]
    file: str | None = None  # the database file's path, for files

    def create_folder(self) -> None:
        """Create the folder of a database file that does not exist yet, as a relative `.data/state.db` needs."""
        if self.file and not self.in_memory and not self.read_only:
            Path(self.file).parent.mkdir(parents=True, exist_ok=True)


def _parse_connection_string(text: str) -> _Target:
    """The connection target, or StoreError for options this store cannot honour."""
    text = text.strip()
    lowered = text.lower()
    base, sep, query_string = text.partition("?")
    kept: list[tuple[str, str]] = []
    pragmas: list[str] = []
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True) if sep else []:
        if name == "_pragma":
            match = _PRAGMA.fullmatch(value.strip())
            if match is None:
                raise StoreError(f"connectionString: _pragma={value!r} is not of the form name(value)")
            pragma = match.group(1).lower()
            if pragma in _FORBIDDEN_PRAGMAS:
                raise StoreError(
                    f"connectionString: _pragma={pragma} is not allowed: {_FORBIDDEN_PRAGMAS[pragma]}"
                )
            pragmas.append(f"PRAGMA {pragma}({match.group(2)})")
        elif name == "_txlock":
            # Dapr's driver option; transactions here always begin IMMEDIATE.
            if value.lower() not in ("immediate", "deferred", "exclusive"):
                raise StoreError(
                    f"connectionString: _txlock={value!r} is not immediate, deferred or exclusive"
                )
        else:
            params.setdefault(name, value)
            kept.append((name, value))
    in_memory = (
        lowered.startswith((":memory:", "file::memory:")) or params.get("mode", "").lower() == "memory"
    )
    read_only = params.get("mode", "").lower() == "ro" or params.get("immutable", "") == "1"
    if not in_memory:
        # A shared cache would make this store's own connections lock tables against each other
        # (SQLITE_LOCKED, which no busy timeout waits for); files use a private cache.
        kept = [(name, value) for name, value in kept if name != "cache"]
    if lowered.startswith("file:"):
        database = base + ("?" + urlencode(kept) if kept else "")
        file = unquote(urlsplit(base).path) or None
        return _Target(database, True, in_memory, read_only, tuple(pragmas), file)
    if not kept:
        return _Target(base, False, in_memory, read_only, tuple(pragmas), base)
    path = "" if base.lower() == ":memory:" else quote(base, safe="/")
    if base.lower() == ":memory:" and "mode" not in params:
        kept.append(("mode", "memory"))
    return _Target(f"file:{path}?{urlencode(kept)}", True, in_memory, read_only, tuple(pragmas), base)


def _ident(name: str) -> str:
    """A table name as an SQL identifier: validated, then quoted."""
    if not re.fullmatch(IDENTIFIER, name):
        raise StoreError(f"{name!r} is not a valid table name (letters, digits and _ only)")
    return f'"{name}"'


# --- values and times -----------------------------------------------------------------------


def _encode(value: bytes) -> tuple[str, int]:
    """(column text, is_binary): UTF-8 text as is, anything else base64 as Dapr stores bytes."""
    if b"\x00" not in value:
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode("utf-8"), 0
    return base64.b64encode(value).decode("ascii"), 1


def _decode(raw: bytes | str, is_binary: object) -> bytes:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return base64.b64decode(data) if is_binary else data


def _stamp(t: float) -> str:
    """A Unix time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), the column format of expiration_time."""
    whole = math.floor(t)
    millis = min(999, int((t - whole) * 1000))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + f".{millis:03d}"


def _unstamp(value: object) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _new_etag() -> str:
    return str(uuid.uuid4())


# --- JSON lookups for rows SQLite's JSON paths cannot address exactly -----------------------

_MISSING = object()
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (int, "integer"),
    (float, "real"),
    (str, "text"),
    (list, "array"),
    (dict, "object"),
)
_last_doc: list[tuple[object, Any]] = [(None, None)]


def _load(text: object) -> Any:
    """The decoded document, remembering the last one (a row's filter asks several times)."""
    last_text, last_doc = _last_doc[0]
    if text is last_text or (type(text) is type(last_text) and text == last_text):
        return last_doc
    try:
        doc = orjson.loads(text) if isinstance(text, str | bytes) else _MISSING
    except orjson.JSONDecodeError:
        doc = _MISSING
    _last_doc[0] = (text, doc)
    return doc


@functools.lru_cache(maxsize=256)
def _path_of(path_json: str) -> tuple[str, ...]:
    return tuple(orjson.loads(path_json))


def _lookup(text: object, path_json: str) -> Any:
    doc = _load(text)
    for part in _path_of(path_json):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _json_type(found: Any) -> str | None:
    if found is _MISSING:
        return None
    if found is None:
        return "null"
    if isinstance(found, bool):
        return "true" if found else "false"
    for kind, name in _JSON_TYPES:
        if isinstance(found, kind):
            return name
    return None


def _sql_value(found: Any) -> Any:
    """What json_extract would return for the decoded value."""
    if found is _MISSING or found is None:
        return None
    if isinstance(found, bool):
        return int(found)
    if isinstance(found, int):
        return found if _INT64[0] <= found <= _INT64[1] else float(found)
    if isinstance(found, float | str):
        return found
    return orjson.dumps(found).decode("utf-8")


def _fn_type(text: object, path_json: str) -> str | None:
    try:
        return _json_type(_lookup(text, path_json))
    except Exception:  # a SQL function must never raise
        return None


def _fn_extract(text: object, path_json: str) -> Any:
    try:
        return _sql_value(_lookup(text, path_json))
    except Exception:
        return None


def _fn_valid(text: object) -> int:
    try:
        return 0 if _load(text) is _MISSING else 1
    except Exception:
        return 0


def _fn_canonical(text: object) -> str | None:
    """Objects and arrays order by their JSON text with sorted keys, exactly as query.sort_key does."""
    try:
        return json.dumps(orjson.loads(text), sort_keys=True, separators=(",", ":"))  # type: ignore[arg-type]
    except Exception:
        return None


def _register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("statestore_json_type", 2, _fn_type, deterministic=True)
    conn.create_function("statestore_json_extract", 2, _fn_extract, deterministic=True)
    conn.create_function("statestore_json_valid", 1, _fn_valid, deterministic=True)
    conn.create_function("statestore_json_canonical", 1, _fn_canonical, deterministic=True)


# --- query translation ----------------------------------------------------------------------


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (code point order), if any."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _number(value: int | float) -> int | float:
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return float(value)
    return value


# Rows whose value holds no backslash: no escapes anywhere, so SQLite's raw label compare is exact.
_PLAIN = "instr(value, '\\') = 0"


class _Builder:
    """Translates a `query.Query` into one SELECT with named parameters."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self._paths: dict[tuple[tuple[str, ...], bool], tuple[str, str]] = {}

    def bind(self, value: object) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def _access(self, path: tuple[str, ...], plain: bool) -> tuple[str, str]:
        """SQL for (JSON type, value) at `path`; SQLite's functions for plain rows when possible."""
        native = plain and not any(_UNQUOTABLE.search(segment) for segment in path)
        cached = self._paths.get((path, native))
        if cached is not None:
            return cached
        if native:
            ref = self.bind("$" + "".join(f'."{segment}"' for segment in path))
            result = (f"json_type(value, {ref})", f"json_extract(value, {ref})")
        else:
            ref = self.bind(orjson.dumps(list(path)).decode("utf-8"))
            result = (f"statestore_json_type(value, {ref})", f"statestore_json_extract(value, {ref})")
        self._paths[(path, native)] = result
        return result

    def _equals(self, kind: str, val: str, value: q.Scalar) -> str:
        if value is None:
            return f"{kind} = 'null'"
        if value is True:
            return f"{kind} = 'true'"
        if value is False:
            return f"{kind} = 'false'"
        if isinstance(value, str):
            return f"({kind} = 'text' AND {val} = {self.bind(value)})"
        return f"({kind} IN {_NUMERIC_TYPES} AND {val} = {self.bind(_number(value))})"

    def condition(self, flt: q.Filter, plain: bool) -> str:
        match flt:
            case q.Logical(op=op, children=children):
                joiner = " AND " if op is q.Op.AND else " OR "
                return "(" + joiner.join(self.condition(child, plain) for child in children) + ")"
            case q.In(path=path, values=values):
                kind, val = self._access(path, plain)
                parts = [
                    f"{kind} = '{name}'"
                    for name, v in (("null", None), ("true", True), ("false", False))
                    if any(x is v for x in values)
                ]
                numbers = [
                    _number(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
                ]
                texts = [v for v in values if isinstance(v, str)]
                if numbers:
                    listed = ", ".join(self.bind(v) for v in numbers)
                    parts.append(f"({kind} IN {_NUMERIC_TYPES} AND {val} IN ({listed}))")
                if texts:
                    listed = ", ".join(self.bind(v) for v in texts)
                    parts.append(f"({kind} = 'text' AND {val} IN ({listed}))")
                return "(" + " OR ".join(parts) + ")"
            case q.Compare(op=op, path=path, value=value):
                kind, val = self._access(path, plain)
                if op is q.Op.EQ:
                    return self._equals(kind, val, value)
                if op is q.Op.NEQ:
                    return f"({kind} IS NOT NULL AND NOT coalesce({self._equals(kind, val, value)}, 0))"
                sql_op = {q.Op.GT: ">", q.Op.GTE: ">=", q.Op.LT: "<", q.Op.LTE: "<="}[op]
                if isinstance(value, str):
                    return f"({kind} = 'text' AND {val} {sql_op} {self.bind(value)})"
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return f"({kind} IN {_NUMERIC_TYPES} AND {val} {sql_op} {self.bind(_number(value))})"
                return "0"  # the parser refuses orderings on null and booleans
        raise AssertionError(f"unknown filter {flt!r}")

    def where(self, flt: q.Filter | None) -> str:
        """Valid JSON and the filter, each row checked by SQLite or, when it has escapes, by Python."""
        if flt is None:
            return f"CASE WHEN {_PLAIN} THEN json_valid(value) ELSE statestore_json_valid(value) END"
        return (
            f"CASE WHEN {_PLAIN} THEN CASE WHEN json_valid(value)"
            f" THEN coalesce({self.condition(flt, True)}, 0) ELSE 0 END"
            f" WHEN statestore_json_valid(value) THEN coalesce({self.condition(flt, False)}, 0) ELSE 0 END"
        )

    def order(self, sort: Sequence[q.SortKey]) -> str:
        """ORDER BY terms: per sort key a type rank (missing/null, booleans, numbers, strings,
        other) and the value; then the key."""
        terms: list[str] = []
        for sk in sort:
            native_kind, native_val = self._access(sk.path, True)
            py_kind, py_val = self._access(sk.path, False)
            kind = f"(CASE WHEN {_PLAIN} THEN {native_kind} ELSE {py_kind} END)"
            val = f"(CASE WHEN {_PLAIN} THEN {native_val} ELSE {py_val} END)"
            rank = (
                f"CASE {kind} WHEN 'true' THEN 1 WHEN 'false' THEN 1 WHEN 'integer' THEN 2"
                " WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 4 ELSE 0 END"
            )
            value = (
                f"CASE WHEN {kind} IN ('array','object') THEN statestore_json_canonical({val}) ELSE {val} END"
            )
            direction = " DESC" if sk.descending else ""
            terms += [rank + direction, value + direction]
        terms.append("key")
        return ", ".join(terms)


def build_query(table: str, query: q.Query, key_prefix: str, now: float) -> tuple[str, dict[str, object]]:
    """The SELECT (and its parameters) answering `query` over the rows under `key_prefix`."""
    b = _Builder()
    conditions: list[str] = []
    if key_prefix:
        conditions.append(f"key >= {b.bind(key_prefix)}")
        end = _prefix_end(key_prefix)
        if end is not None:
            conditions.append(f"key < {b.bind(end)}")
    conditions.append(f"(expiration_time IS NULL OR expiration_time > {b.bind(_stamp(now))})")
    conditions.append("is_binary = 0")
    conditions.append(b.where(query.filter))
    sql = (
        f"SELECT key, CAST(value AS BLOB), etag FROM {_ident(table)}"
        f" WHERE {' AND '.join(conditions)}"
        f" ORDER BY {b.order(query.sort)}"
        f" LIMIT {b.bind(query.limit if query.limit > 0 else -1)} OFFSET {b.bind(query.offset)}"
    )
    return sql, b.params


# --- threads owning connections -------------------------------------------------------------


class _Deadline(threading.local):
    conn: sqlite3.Connection | None = None
    at: float = math.inf


class _Timeout(Exception):
    pass


class _Mode(enum.Enum):
    ALONE = "alone"  # outside any transaction, never batched (setup, reads, ping)
    STATEMENT = "statement"  # one write statement: atomic by itself
    TRANSACTION = "transaction"  # several write statements that must apply together


class _Lane:
    """Reader threads that each own one connection; every call runs on one of them with a deadline."""

    def __init__(self, name: str, threads: int, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._connect = connect
        self._local = _Deadline()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _progress(self) -> int:
        # Runs in the thread executing a statement: a nonzero answer interrupts it.
        return 1 if time.monotonic() > self._local.at else 0

    def _connection(self) -> sqlite3.Connection:
        conn = self._local.conn
        if conn is None:
            conn = self._connect()
            conn.set_progress_handler(self._progress, 1000)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _run(self, fn: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        if time.monotonic() > deadline:
            raise _Timeout
        conn = self._connection()
        self._local.at = deadline
        try:
            return fn(conn)
        finally:
            self._local.at = math.inf

    async def call(
        self, fn: Callable[[sqlite3.Connection], T], seconds: float, grace: float, mode: _Mode = _Mode.ALONE
    ) -> T:
        assert mode is _Mode.ALONE, "reader connections do not write"
        deadline = time.monotonic() + seconds
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn, deadline)
        try:
            return await asyncio.wait_for(future, seconds + grace)
        except TimeoutError:
            raise _Timeout from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    deadline: float
    future: Future[Any]
    mode: _Mode


class _BatchBroken(Exception):
    """SQLite rolled the whole batch back after one job's error; the jobs are run one by one."""


class _Writer:
    """The one thread (and connection) that writes for this store, with group commit.

    Writes waiting together run in one `BEGIN IMMEDIATE` transaction, each inside a savepoint so a
    refused job (an etag mismatch) leaves the others alone; one commit (one fsync) then makes them all
    durable before any of them is answered.
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._at = math.inf
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._at else 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = self._connect()
            conn.set_progress_handler(self._progress, 1000)
            self._conn = conn
        return self._conn

    async def call(
        self, fn: Callable[[sqlite3.Connection], T], seconds: float, grace: float, mode: _Mode = _Mode.ALONE
    ) -> T:
        future: Future[T] = Future()
        self._queue.put(_Job(fn, time.monotonic() + seconds, future, mode))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), seconds + grace)
        except TimeoutError:
            raise _Timeout from None

    def shutdown(self) -> None:
        self._queue.put(None)
        self._thread.join()
        while True:  # calls that came in after the stop: refused rather than left waiting
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                break
            if late is not None and late.future.set_running_or_notify_cancel():
                late.future.set_exception(BackendUnavailable("the SQLite store is closed"))
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # --- the writer thread ---

    def _loop(self) -> None:
        held: _Job | None = None
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                return
            if job.mode is _Mode.ALONE:
                batch = [job]
            else:
                batch = [job]
                while len(batch) < _MAX_BATCH:
                    try:
                        waiting = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if waiting is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    if waiting.mode is _Mode.ALONE:
                        held = waiting
                        break
                    batch.append(waiting)
            running = [j for j in batch if j.future.set_running_or_notify_cancel()]
            try:
                if job.mode is _Mode.ALONE:
                    for one in running:
                        self._run_one(one)
                else:
                    self._run_batch(running)
            except BaseException as exc:  # a bug here must not leave callers waiting, nor end the thread
                log.exception("sqlite writer %s: unexpected failure", self._thread.name)
                for one in running:
                    if not one.future.done():
                        one.future.set_exception(StoreError(f"SQLite writer failed: {exc!r}"))

    def _run_one(self, job: _Job) -> None:
        """One job on its own: a statement in autocommit, a transaction in its own transaction."""
        try:
            if time.monotonic() > job.deadline:
                raise _Timeout
            conn = self._connection()
            self._at = job.deadline
            try:
                if job.mode is _Mode.TRANSACTION:
                    conn.execute("BEGIN IMMEDIATE")
                    result = job.fn(conn)
                    conn.execute("COMMIT")
                else:
                    result = job.fn(conn)
            finally:
                self._at = math.inf
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _run_batch(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        for job in [j for j in batch if now > j.deadline]:
            job.future.set_exception(_Timeout())
        batch = [j for j in batch if now <= j.deadline]
        if len(batch) <= 1:
            for job in batch:
                self._run_one(job)
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:  # the write lock or the connection is not to be had
            for job in batch:
                job.future.set_exception(exc)
            return
        try:
            for job in batch:
                conn.execute("SAVEPOINT job")
                self._at = job.deadline
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    self._at = math.inf
                    if not conn.in_transaction:
                        raise _BatchBroken from exc
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    self._at = math.inf
                    conn.execute("RELEASE job")
                    outcomes.append((True, value))
        except BaseException as exc:
            self._at = math.inf
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, _BatchBroken | sqlite3.Error):
                for job in batch:  # nothing was kept: each job again, alone
                    self._run_one(job)
                return
            for job in batch:
                job.future.set_exception(exc)
            return
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


# --- the store ------------------------------------------------------------------------------


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
        self._writer: _Writer | None = None
        self._reader: _Lane | _Writer | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._target: _Target | None = None

    def _prepare_sql(self) -> None:
        t = _ident(self._table_name)
        live = "(expiration_time IS NULL OR expiration_time > ?)"
        columns = "(key, value, is_binary, etag, expiration_time, update_time)"
        self._sql_get = (
            f"SELECT CAST(value AS BLOB), is_binary, etag, expiration_time FROM {t} WHERE key = ? AND {live}"
        )
        self._sql_bulk_get = (
            f"SELECT key, CAST(value AS BLOB), is_binary, etag, expiration_time FROM {t}"
            f" WHERE key IN (SELECT j.value FROM json_each(?) AS j) AND {live}"
        )
        self._sql_upsert = (
            f"INSERT INTO {t} {columns} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, is_binary = excluded.is_binary, etag = excluded.etag,"
            " expiration_time = excluded.expiration_time, update_time = excluded.update_time"
        )
        # First write: insert, or replace only a row that has expired.
        self._sql_insert = (
            self._sql_upsert + f" WHERE {t}.expiration_time IS NOT NULL AND {t}.expiration_time <= ?"
        )
        self._sql_update = (
            f"UPDATE {t} SET value = ?, is_binary = ?, etag = ?, expiration_time = ?, update_time = ?"
            f" WHERE key = ? AND etag = ? AND {live}"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_delete_etag = f"DELETE FROM {t} WHERE key = ? AND etag = ? AND {live}"
        self._sql_sweep = f"DELETE FROM {t} WHERE expiration_time IS NOT NULL AND expiration_time <= ?"
        m = _ident(self._metadata_table_name)
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
            _register_functions(conn)
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
        state, meta = _ident(self._table_name), _ident(self._metadata_table_name)

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
        self._prepare_sql()
        if self._table_name == self._metadata_table_name:
            raise StoreError("tableName and metadataTableName must name different tables")
        self._target = target = _parse_connection_string(self._connection_string)
        try:
            await asyncio.to_thread(target.create_folder)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create the folder of the SQLite database: {exc}") from None
        writer = _Writer(f"sqlite-{self._name}-w", functools.partial(self._connect, writer=True))
        try:
            await self._call(writer, self._setup)
        except BaseException:
            await asyncio.to_thread(writer.shutdown)
            raise
        self._writer = writer
        self._reader = (
            writer
            if target.in_memory
            else _Lane(
                f"sqlite-{self._name}-r", _READER_THREADS, functools.partial(self._connect, writer=False)
            )
        )
        if self._cleanup_interval > 0:
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_periodically())

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
            self._cleaner = None
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            await asyncio.to_thread(reader.shutdown)
        if writer is not None:
            await asyncio.to_thread(writer.shutdown)

    async def ping(self) -> None:
        await self._call(self._lane(read=True), lambda conn: conn.execute("SELECT 1").fetchone())

    # --- calls ---

    def _lane(self, *, read: bool) -> _Lane | _Writer:
        lane = self._reader if read else self._writer
        if lane is None:
            raise BackendUnavailable(f"the SQLite store {self._name} is not initialised")
        return lane

    async def _call(
        self, lane: _Lane | _Writer, fn: Callable[[sqlite3.Connection], T], mode: _Mode = _Mode.ALONE
    ) -> T:
        try:
            return await lane.call(fn, self._timeout, self._grace, mode)
        except _Timeout:
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
            row = conn.execute(self._sql_get, (key, _stamp(time.time()))).fetchone()
            if row is None:
                return None
            return Item(_decode(row[0], row[1]), str(row[2]), _unstamp(row[3]))

        return await self._call(self._lane(read=True), run)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        if not keys:
            return {}
        # json_each ends a text at its first NUL character, so keys holding one are read one by one.
        plain = [k for k in keys if "\x00" not in k]
        with_nul = [k for k in keys if "\x00" in k]
        wanted = orjson.dumps(plain).decode("utf-8")

        def run(conn: sqlite3.Connection) -> dict[str, Item]:
            now = _stamp(time.time())
            rows = conn.execute(self._sql_bulk_get, (wanted, now)).fetchall() if plain else []
            found = {str(r[0]): Item(_decode(r[1], r[2]), str(r[3]), _unstamp(r[4])) for r in rows}
            for key in with_nul:
                row = conn.execute(self._sql_get, (key, now)).fetchone()
                if row is not None:
                    found[key] = Item(_decode(row[0], row[1]), str(row[2]), _unstamp(row[3]))
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
        """One set or delete, refused with EtagMismatch exactly when check_set/check_delete would."""
        stamp = _stamp(now)
        if isinstance(op, SetRequest):
            value, is_binary = _encode(op.value)
            expires = expiry(op.ttl, now)
            expires_at = _stamp(expires) if expires is not None else None
            if op.etag:
                cursor = conn.execute(
                    self._sql_update,
                    (value, is_binary, _new_etag(), expires_at, stamp, op.key, op.etag, stamp),
                )
                if cursor.rowcount == 0:
                    raise EtagMismatch(f"etag mismatch for key {op.key}")
            elif op.concurrency is Concurrency.FIRST_WRITE:
                cursor = conn.execute(
                    self._sql_insert, (op.key, value, is_binary, _new_etag(), expires_at, stamp, stamp)
                )
                if cursor.rowcount == 0:
                    raise EtagMismatch(f"key {op.key} already exists and first-write was requested")
            else:
                conn.execute(self._sql_upsert, (op.key, value, is_binary, _new_etag(), expires_at, stamp))
        elif op.etag:
            cursor = conn.execute(self._sql_delete_etag, (op.key, op.etag, stamp))
            if cursor.rowcount == 0:
                raise EtagMismatch(f"etag mismatch for key {op.key}")
        else:
            conn.execute(self._sql_delete, (op.key,))

    async def set(self, request: SetRequest) -> None:
        await self._call(
            self._lane(read=False), lambda conn: self._write(conn, request, time.time()), _Mode.STATEMENT
        )

    async def delete(self, request: DeleteRequest) -> None:
        await self._call(
            self._lane(read=False), lambda conn: self._write(conn, request, time.time()), _Mode.STATEMENT
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

        mode = _Mode.STATEMENT if len(ops) == 1 else _Mode.TRANSACTION
        await self._call(self._lane(read=False), run, mode)

    # --- expired rows ---

    def _sweep(self, conn: sqlite3.Connection) -> int:
        """Delete expired rows unless another process did within the interval; the count deleted."""
        now = _stamp(time.time())
        marked = conn.execute(self._sql_mark_cleanup, (now, self._cleanup_interval * 900.0)).rowcount
        return int(conn.execute(self._sql_sweep, (now,)).rowcount) if marked else 0

    async def cleanup_expired(self) -> int:
        return await self._call(self._lane(read=False), self._sweep, _Mode.TRANSACTION)

    async def _clean_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                deleted = await self.cleanup_expired()
            except StoreError as exc:
                log.warning("sqlite store %s: removing expired rows failed: %s", self._name, exc)
            else:
                if deleted:
                    log.debug("sqlite store %s: removed %d expired rows", self._name, deleted)


def create(config: StoreConfig) -> SQLiteStore:
    return SQLiteStore(config)
