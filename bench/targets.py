"""The ways of reaching a backend that the benchmark compares, for its operations on 1 KB JSON values.

The operations (`OPS`): GET of one key, SAVE of one item, BULK get of 100 keys, and a TRANSACTION of
two operations (an upsert and a delete).

* `Api`: Dapr's state HTTP API of a running server (GET /v1.0/state/<store>/<key>, POST
  /v1.0/state/<store> with one item, POST …/bulk, POST …/transaction).
* `Grpc`: Dapr's gRPC API of the same server (`GetState`, `SaveState` with one item, `GetBulkState`,
  `ExecuteStateTransaction`), through grpcio's asyncio client and the `dapr` package's stubs, as the
  official Python SDK sends them.
* `RedisDirect`, `PostgresDirect`, `SqliteDirect`: GET and SAVE only, the database through its Python
  driver running the statements the store itself runs for the same operation (so "API minus direct"
  is the cost the API adds: HTTP, decoding, the store's Python code), on the same rows the API reads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import orjson

from .load import HttpPool, http_get, http_post

APP_ID = "bench"
STORE = "bench"
KEYS = 1000
BULK_KEYS = 100
OPS = ("get", "save", "bulk", "transaction")
DIRECT_OPS = ("get", "save")


def key(i: int) -> str:
    return f"k{i % KEYS}"


def bulk_keys(i: int) -> list[str]:
    """A window of BULK_KEYS seeded keys starting at key i."""
    return [key(i + n) for n in range(BULK_KEYS)]


def gone_key(i: int) -> str:
    """The key a transaction deletes: never seeded, so every transaction does the same work."""
    return f"gone{i % KEYS}"


def save_body(i: int, value: bytes) -> bytes:
    return b'[{"key":"%s","value":%s}]' % (key(i).encode(), value)


def bulk_body(i: int) -> bytes:
    return orjson.dumps({"keys": bulk_keys(i)})


def transaction_body(i: int, value: bytes) -> bytes:
    upsert = b'{"operation":"upsert","request":{"key":"%s","value":%s}}' % (key(i).encode(), value)
    delete = b'{"operation":"delete","request":{"key":"%s"}}' % gone_key(i).encode()
    return b'{"operations":[%s,%s]}' % (upsert, delete)


def http_requests(op: str, value: bytes) -> tuple[str, list[str], list[bytes] | None]:
    """An operation over HTTP: its method, and per key i of range(KEYS) its path and body (no bodies
    for GET), as `Api` sends them and the bench's wrk scripts replay them."""
    store = f"/v1.0/state/{STORE}"
    n = range(KEYS)
    if op == "get":
        return "GET", [f"{store}/{key(i)}" for i in n], None
    if op == "save":
        return "POST", [store] * KEYS, [save_body(i, value) for i in n]
    if op == "bulk":
        return "POST", [f"{store}/bulk"] * KEYS, [bulk_body(i) for i in n]
    return "POST", [f"{store}/transaction"] * KEYS, [transaction_body(i, value) for i in n]


def call_of(target: Target, op: str) -> Any:
    """The target's method for an operation of OPS."""
    return getattr(target, op)


def stored_key(i: int) -> str:
    """The key as the API stores it (the default `appid` key prefix)."""
    return f"{APP_ID}||{key(i)}"


def value_1kb() -> bytes:
    """A 1,024-byte JSON document, as an application would store it."""
    doc: dict[str, Any] = {
        "id": "order-000001",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
        "items": [{"sku": f"SKU-{n:04d}", "qty": n % 3 + 1, "price": 9.99 + n} for n in range(6)],
        "status": "paid",
        "note": "",
    }
    size = len(orjson.dumps(doc))
    doc["note"] = "x" * (1024 - size)
    data = orjson.dumps(doc)
    assert len(data) == 1024, len(data)
    return data


class Target(Protocol):
    name: str

    async def get(self, i: int) -> int: ...

    async def save(self, i: int) -> int: ...

    async def close(self) -> None: ...


class Api:
    """The state API over keep-alive HTTP/1.1 connections."""

    name = "api"

    def __init__(self, pool: HttpPool, value: bytes) -> None:
        self.pool = pool
        self.requests: dict[str, list[bytes]] = {}
        for op in OPS:
            _, paths, bodies = http_requests(op, value)
            self.requests[op] = (
                [http_get(p) for p in paths]
                if bodies is None
                else [http_post(p, b) for p, b in zip(paths, bodies, strict=True)]
            )

    @classmethod
    async def open(cls, port: int, value: bytes, connections: int) -> Api:
        return cls(await HttpPool("127.0.0.1", port, connections).open(), value)

    async def get(self, i: int) -> int:
        return await self.pool.send(self.requests["get"][i % KEYS])

    async def save(self, i: int) -> int:
        return await self.pool.send(self.requests["save"][i % KEYS])

    async def bulk(self, i: int) -> int:
        return await self.pool.send(self.requests["bulk"][i % KEYS])

    async def transaction(self, i: int) -> int:
        return await self.pool.send(self.requests["transaction"][i % KEYS])

    async def close(self) -> None:
        self.pool.close()


class Grpc:
    """The state API over gRPC: one channel (HTTP/2 connection) per client connection, round robin."""

    name = "grpc"

    def __init__(self, port: int, value: bytes, connections: int) -> None:
        import grpc.aio
        from dapr.proto.common.v1 import common_pb2
        from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

        self._ok = grpc.StatusCode.OK
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(connections)]
        self.stubs = [dapr_pb2_grpc.DaprStub(c) for c in self.channels]  # type: ignore[no-untyped-call]
        self.gets = [state_pb2.GetStateRequest(store_name=STORE, key=key(i)) for i in range(KEYS)]
        self.saves = [
            state_pb2.SaveStateRequest(
                store_name=STORE, states=[common_pb2.StateItem(key=key(i), value=value)]
            )
            for i in range(KEYS)
        ]
        self.bulks = [state_pb2.GetBulkStateRequest(store_name=STORE, keys=bulk_keys(i)) for i in range(KEYS)]
        self.transactions = [
            state_pb2.ExecuteStateTransactionRequest(
                storeName=STORE,
                operations=[
                    state_pb2.TransactionalStateOperation(
                        operationType="upsert", request=common_pb2.StateItem(key=key(i), value=value)
                    ),
                    state_pb2.TransactionalStateOperation(
                        operationType="delete", request=common_pb2.StateItem(key=gone_key(i))
                    ),
                ],
            )
            for i in range(KEYS)
        ]
        self.turn = 0

    def _stub(self) -> Any:
        self.turn += 1
        return self.stubs[self.turn % len(self.stubs)]

    async def _status(self, call: Any) -> int:
        try:
            await call
        except Exception:
            return 500
        return 200

    async def get(self, i: int) -> int:
        return await self._status(self._stub().GetState(self.gets[i % KEYS]))

    async def save(self, i: int) -> int:
        return await self._status(self._stub().SaveState(self.saves[i % KEYS]))

    async def bulk(self, i: int) -> int:
        return await self._status(self._stub().GetBulkState(self.bulks[i % KEYS]))

    async def transaction(self, i: int) -> int:
        return await self._status(self._stub().ExecuteStateTransaction(self.transactions[i % KEYS]))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


class RedisDirect:
    """redis.asyncio: HMGET of the item's hash, and the store's write script (EVALSHA)."""

    name = "direct"

    def __init__(self, url: str, value: bytes, connections: int) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.connection import BlockingConnectionPool

        from statestore_sidecar.stores.redis.script import WRITE_SCRIPT

        pool = BlockingConnectionPool.from_url(url, max_connections=connections, protocol=2)
        self.client = aioredis.Redis(connection_pool=pool)
        self.script = self.client.register_script(WRITE_SCRIPT)
        self.value = value

    async def get(self, i: int) -> int:
        async with self.client.pipeline(transaction=False) as pipe:  # the store's GET: fields and TTL
            pipe.hmget(stored_key(i), ["data", "version"])
            pipe.pttl(stored_key(i))
            (data, _version), _pttl = await pipe.execute()
        return 200 if data is not None else 204

    async def save(self, i: int) -> int:
        code, _ = await self.script(keys=[stored_key(i)], args=["S", "", "0", "0", self.value])
        return 204 if int(code) == 0 else 409

    async def close(self) -> None:
        await self.client.aclose()


# The statements of state.postgresql's `get` and last-write `set` (stores/postgresql/store.py).
_PG_LIVE = "(expiredate IS NULL OR expiredate > now())"
_PG_GET = (
    "SELECT value, isbinary, xmin::text, extract(epoch FROM expiredate)::float8 FROM state "
    f"WHERE key = $1 AND {_PG_LIVE}"
)
_PG_UPSERT = (
    "INSERT INTO state (key, value, isbinary, expiredate) VALUES ($1, $2::jsonb, $3, "
    "CASE WHEN $4::integer > 0 THEN now() + make_interval(secs => $4::integer) END) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = excluded.isbinary, "
    "updatedate = now(), expiredate = excluded.expiredate"
)


class PostgresDirect:
    """asyncpg with a pool; statements are prepared once per connection by asyncpg's cache."""

    name = "direct"

    def __init__(self, pool: Any, value: bytes) -> None:
        self.pool = pool
        self.doc = value.decode()

    @classmethod
    async def open(cls, dsn: str, value: bytes, connections: int) -> PostgresDirect:
        import asyncpg

        async def keep_session(conn: Any) -> None:
            pass  # as the store: no RESET ALL round trip on every release (see _keep_session there)

        pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections, reset=keep_session)
        return cls(pool, value)

    async def get(self, i: int) -> int:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(_PG_GET, stored_key(i))
        return 200 if row is not None else 204

    async def save(self, i: int) -> int:
        async with self.pool.acquire() as conn:
            await conn.execute(_PG_UPSERT, stored_key(i), self.doc, False, None)
        return 204

    async def close(self) -> None:
        await self.pool.close()


# The statements of state.sqlite's `get` and last-write `set` (stores/sqlite/store.py).
_SQLITE_LIVE = "(expiration_time IS NULL OR expiration_time > ?)"
_SQLITE_GET = f"SELECT CAST(value AS BLOB), is_binary, etag, expiration_time FROM state WHERE key = ? AND {_SQLITE_LIVE}"
_SQLITE_UPSERT = (
    "INSERT INTO state (key, value, is_binary, etag, expiration_time, update_time) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, is_binary = excluded.is_binary,"
    " etag = excluded.etag, expiration_time = excluded.expiration_time, update_time = excluded.update_time"
)


class SqliteDirect:
    """sqlite3 on the same file, one connection on one thread (as an asyncio app would use it)."""

    name = "direct"

    def __init__(self, path: str, value: bytes) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="bench-sqlite")
        self.local = threading.local()
        self.path = path
        self.value = value.decode()
        self.connections: list[sqlite3.Connection] = []

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 2000")
            self.local.conn = conn
            self.connections.append(conn)
        return conn

    @staticmethod
    def _now() -> str:
        import time

        t = time.time()
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"

    def _get(self, i: int) -> int:
        row = self._conn().execute(_SQLITE_GET, (stored_key(i), self._now())).fetchone()
        return 200 if row is not None else 204

    def _save(self, i: int) -> int:
        now = self._now()
        self._conn().execute(_SQLITE_UPSERT, (stored_key(i), self.value, 0, str(uuid.uuid4()), None, now))
        return 204

    async def get(self, i: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._get, i)

    async def save(self, i: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._save, i)

    async def close(self) -> None:
        self.executor.shutdown(wait=True)
        for conn in self.connections:
            conn.close()
