"""`state.redis`: state in Redis (6+): one node, a Sentinel-managed primary, or a Redis Cluster
(topology.py), through redis-py's asyncio client.

Each item is a hash `{data, version}` under its stored key, as daprd's Redis store writes it, and its
expiry is the key's own (daprd's EXPIRE): `ttlExpireTime` is read from the key's remaining TTL, so
expiries written by daprd are reported, and a daprd rewrite never leaves a stale one behind. A
`first-write` field daprd may leave in the hash is ignored and removed by our next write.

* Every write goes through one Lua script (EVALSHA, falling back to EVAL after a restart), which
  first checks every operation's etag against the state the earlier operations leave, then applies
  them all: single writes and transactions are atomic and all-or-nothing, and follow the same etag
  rules as the other stores (an etag on a missing key is a mismatch; any wrong etag is a mismatch).
* Etags are integers: a new key starts at the server's clock in microseconds and each write adds
  one (never below the clock), so a deleted and re-created key never repeats an earlier etag.
* TTL is Redis key expiry (PEXPIREAT), taken from the request or the component's `ttlInSeconds`;
  a write without TTL clears an earlier one (Dapr's Redis would keep it; we follow the shared rules).
* On a Cluster, the keys of one transaction must share a hash slot (use a `{hash tag}` in the keys);
  otherwise it is refused before anything is written, since Redis runs a script on one node only.
* Query needs RediSearch and RedisJSON and a different storage layout; it is not implemented, so
  QUERY_API is never advertised (`init` still records which modules the server has).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ... import query as q
from .. import StoreConfig
from ..base import (
    BackendUnavailable,
    Concurrency,
    DeleteRequest,
    Feature,
    Item,
    Operation,
    QueryError,
    QueryPage,
    SetRequest,
    StoreError,
    etag_mismatch,
    first_write_conflict,
)
from . import replies, topology
from .connection import Settings, connect
from .metadata import SCHEMA
from .pipelined import Pipeline, encode
from .script import WRITE_SCRIPT, WRITE_SCRIPT_SHA

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

T = TypeVar("T")


def _unavailable(exc: BaseException) -> bool:
    import redis.exceptions as rex

    return isinstance(
        exc,
        rex.ConnectionError
        | rex.TimeoutError
        | OSError
        | asyncio.TimeoutError
        | rex.ClusterDownError
        | rex.ClusterError
        | rex.SlotNotCoveredError,
    )


# Keys per pipeline of a bulk get.
_BULK_BATCH = 5000

# Replies meaning the server is (for now) unable to serve, not that the request is wrong.
_UNAVAILABLE_REPLIES = ("LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN")


def _read_commands(key: str) -> tuple[bytes, bytes]:
    """A read of one item on the pipelined connection: its fields, then its TTL."""
    return encode(b"HMGET", key, b"data", b"version"), encode(b"PTTL", key)


class RedisStore:
    features: frozenset[Feature] = SCHEMA.features

    def __init__(self, config: StoreConfig) -> None:
        self.settings = settings = Settings.from_config(config)
        self._name = settings.name
        self._cluster = settings.cluster
        self._failover = settings.failover
        self._where = settings.where
        self._pool_timeout = settings.pool_timeout
        self._min_idle = settings.min_idle
        self._call_timeout = settings.call_timeout
        self._default_ttl = settings.default_ttl
        self.modules: frozenset[str] = frozenset()
        # Connections the hot GET keeps checked out between calls (see `_hot_hmget`); at most half
        # the pool, so the other commands always find connections in it.
        self._spare: list[Any] = []
        self._spare_max = max(1, settings.pool_size // 2)
        self._client: redis.asyncio.Redis | None = None
        # redis-py's Cluster client fails at once when a node's connections are all in use; this
        # bounds the calls in flight instead, so callers wait up to poolTimeout as with one node.
        self._gate = asyncio.Semaphore(settings.pool_size) if settings.cluster else None
        self._script: Any = None
        # One node without TLS: GET and writes go over one pipelined connection (pipelined.py).
        self._pipeline: Pipeline | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    async def _call(self, work: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T:
        """Run one backend call within the call timeout, mapping failures to store errors."""
        import redis.exceptions as rex

        client = self._client
        if client is None:
            raise BackendUnavailable("the Redis store is not initialised")
        try:
            async with asyncio.timeout(self._call_timeout):
                return await self._gated(work, client)
        except StoreError:
            raise
        except rex.AuthenticationError as exc:
            raise BackendUnavailable(f"redis {self._where}: authentication failed: {exc}") from None
        except TimeoutError:
            raise BackendUnavailable(
                f"redis {self._where} did not answer within {self._call_timeout:g}s"
            ) from None
        except Exception as exc:
            if _unavailable(exc):
                raise BackendUnavailable(f"redis {self._where} is unavailable: {exc}") from None
            if isinstance(exc, rex.ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise BackendUnavailable(f"redis {self._where}: {exc}") from None
            if isinstance(exc, rex.RedisError):
                raise StoreError(f"redis error: {exc}") from None
            raise

    async def _gated(self, work: Callable[[redis.asyncio.Redis], Awaitable[T]], client: Any) -> T:
        gate = self._gate
        if gate is None:
            return await work(client)
        try:
            async with asyncio.timeout(self._pool_timeout):
                await gate.acquire()
        except TimeoutError:
            raise BackendUnavailable(
                f"redis {self._where}: no free connection within {self._pool_timeout:g}s"
            ) from None
        try:
            return await work(client)
        finally:
            gate.release()

    async def init(self) -> None:
        if self._client is None:
            connected = connect(self.settings)
            self._client, self._pipeline, self._tmpdir = (
                connected.client,
                connected.pipeline,
                connected.tls_dir,
            )
            self._script = self._client.register_script(WRITE_SCRIPT)
        await self.ping()

        async def modules(client: redis.asyncio.Redis) -> frozenset[str]:
            import redis.exceptions as rex

            try:
                listed = await client.module_list()
            except rex.ResponseError:  # not allowed for this user, or no modules support
                return frozenset()
            names = set()
            for entry in listed or []:
                fields = (
                    dict(zip(entry[::2], entry[1::2], strict=False)) if isinstance(entry, list) else entry
                )
                name = fields.get(b"name") or fields.get("name")
                if name:
                    names.add(name.decode() if isinstance(name, bytes) else str(name))
            return frozenset(names)

        self.modules = await self._call(modules)
        if {"search", "ReJSON"} <= self.modules:
            log.info("redis %s has RediSearch and RedisJSON, but query is not implemented", self._name)
        if self._min_idle:
            # Open the minimum of idle connections now, as go-redis would.
            async def warm(client: redis.asyncio.Redis) -> None:
                await asyncio.gather(*(client.ping() for _ in range(self._min_idle)))

            await self._call(warm)

    async def close(self) -> None:
        self._spare.clear()  # checked out of the pool, which disconnects them below
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
            with contextlib.suppress(Exception):
                await client.connection_pool.disconnect()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def ping(self) -> None:
        async def ping(client: redis.asyncio.Redis) -> None:
            await client.ping()

        await self._call(ping)

    # -- reads ---------------------------------------------------------------------------------------
    async def get(self, key: str) -> Item | None:
        async def get(client: redis.asyncio.Redis) -> Item | None:
            if self._pipeline is not None:
                fields, pttl = await self._piped_hmget(client, key)
            elif self._failover or self._cluster:  # connections follow the primary: no kept connection
                fields, pttl = await self._hmget_pttl(client, key)
            else:
                fields, pttl = await self._hot_hmget(client, key)
            return replies.item(fields, pttl, time.time())

        return await self._call(get)

    async def _piped_hmget(self, client: redis.asyncio.Redis, key: str) -> tuple[Any, Any]:
        """HMGET and PTTL on the pipelined connection; through redis-py (and its retries) when
        that connection is broken."""
        import redis.exceptions as rex

        pipeline = self._pipeline
        assert pipeline is not None
        try:
            fields, pttl = await pipeline.call(_read_commands(key))
        except rex.ConnectionError:
            return await self._hmget_pttl(client, key)
        for reply in (fields, pttl):
            if isinstance(reply, rex.ResponseError):
                raise reply
        return fields, pttl

    async def _piped_script(self, client: redis.asyncio.Redis, keys: list[str], args: list[Any]) -> Any:
        """The write script on the pipelined connection: EVALSHA, then EVAL if the server lost the
        script; through redis-py (and its retries) when that connection is broken."""
        import redis.exceptions as rex

        pipeline = self._pipeline
        assert pipeline is not None
        tail = (str(len(keys)), *keys, *args)
        try:
            (reply,) = await pipeline.call((encode(b"EVALSHA", WRITE_SCRIPT_SHA, *tail),))
            if isinstance(reply, rex.ResponseError) and str(reply).startswith("NOSCRIPT"):
                (reply,) = await pipeline.call((encode(b"EVAL", WRITE_SCRIPT, *tail),))
        except rex.ConnectionError:
            return await self._script(keys=keys, args=args, client=client)
        if isinstance(reply, rex.ResponseError):
            raise reply
        return reply

    async def _hot_hmget(self, client: redis.asyncio.Redis, key: str) -> tuple[Any, Any]:
        """HMGET and PTTL, pipelined on a connection kept from the last call, past redis-py's
        per-command machinery.

        Profiles of a GET put 45% of its CPU in redis-py's client layer around the one command:
        the blocking pool's condition and timeout, retry and deprecation wrappers, connection
        events. A connection is taken from the pool once and reused; whatever goes wrong on it
        (a dropped connection, a timeout, a cancellation) disconnects it, gives it back to the pool
        and, unless cancelled, runs the command again the ordinary way, with redis-py's retries.
        """
        import redis.exceptions as rex

        pool = client.connection_pool
        conn = self._spare.pop() if self._spare else await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(
                conn.pack_commands([("HMGET", key, "data", "version"), ("PTTL", key)])
            )
            refused: rex.ResponseError | None = None
            try:
                fields = await conn.read_response()
            except rex.ResponseError as exc:  # e.g. WRONGTYPE: PTTL's reply is still to be read
                refused = exc
            pttl = await conn.read_response()
            if refused is not None:
                raise refused
        except rex.ResponseError:
            await self._keep(conn, pool)  # the server answered: the connection is in a clean state
            raise
        except Exception:
            await conn.disconnect()
            await pool.release(conn)
            return await self._hmget_pttl(client, key)
        except BaseException:  # cancelled mid-command: a reply may still be on its way
            await conn.disconnect()
            await pool.release(conn)
            raise
        await self._keep(conn, pool)
        return fields, pttl

    @staticmethod
    async def _hmget_pttl(client: redis.asyncio.Redis, key: str) -> tuple[Any, Any]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hmget(key, ["data", "version"])
            pipe.pttl(key)
            fields, pttl = await pipe.execute()
        return fields, pttl

    async def _keep(self, conn: Any, pool: Any) -> None:
        if self._client is None:  # closed meanwhile: the pool has disconnected it
            return
        if len(self._spare) < self._spare_max:
            self._spare.append(conn)
        else:
            await pool.release(conn)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}

        async def bulk(batch: Sequence[str], client: redis.asyncio.Redis) -> dict[str, Item]:
            async with client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hmget(key, ["data", "version"])
                answers = await pipe.execute(raise_on_error=False)
            # Then the TTLs of the keys found only: most of a large bulk get may be absent keys.
            present = [(key, r) for key, r in zip(batch, answers, strict=True) if replies.present(r)]
            if not present:
                return {}
            async with client.pipeline(transaction=False) as pipe:
                for key, _ in present:
                    pipe.pttl(key)
                ttls = await pipe.execute(raise_on_error=False)
            return replies.found(
                [k for k, _ in present], [[*r, t] for (_, r), t in zip(present, ttls, strict=True)]
            )

        async def piped(batch: Sequence[str], client: redis.asyncio.Redis) -> dict[str, Item]:
            # On the pipelined connection, HMGET and PTTL of every key leave in one write, one round
            # trip (PTTL of an absent key is cheap); through redis-py when that connection is broken.
            import redis.exceptions as rex

            pipeline = self._pipeline
            assert pipeline is not None
            commands: list[bytes] = []
            for key in batch:
                commands += _read_commands(key)
            try:
                answers = await pipeline.call(commands)
            except rex.ConnectionError:
                return await bulk(batch, client)
            rows = [
                r if isinstance(r, Exception) else [*r, t]
                for r, t in zip(answers[0::2], answers[1::2], strict=True)
            ]
            return replies.found(batch, rows)

        async def bulk_by_slot(groups: list[list[str]], client: redis.asyncio.Redis) -> dict[str, Item]:
            answers = await topology.cluster_hmget(client, groups)
            return replies.found([key for group in groups for key in group], answers)

        # In batches, each within the call timeout: a pipeline of 100,000 keys can take longer than
        # one call may.
        found: dict[str, Item] = {}
        if self._cluster:
            for groups in topology.slot_batches(unique, _BULK_BATCH):
                found.update(await self._call(functools.partial(bulk_by_slot, groups)))
            return found
        one_node = piped if self._pipeline is not None else bulk
        for start in range(0, len(unique), _BULK_BATCH):
            found.update(await self._call(functools.partial(one_node, unique[start : start + _BULK_BATCH])))
        return found

    # -- writes --------------------------------------------------------------------------------------
    def _ttl_ms(self, ttl: int | None) -> int:
        if ttl is None:
            ttl = self._default_ttl
        return ttl * 1000 if ttl is not None and ttl > 0 else 0

    async def transact(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        keys: list[str] = []
        args: list[bytes | str] = []
        for op in operations:
            keys.append(op.key)
            if isinstance(op, SetRequest):
                first = "1" if op.concurrency is Concurrency.FIRST_WRITE else "0"
                args += ["S", op.etag or "", first, str(self._ttl_ms(op.ttl)), op.value]
            else:
                args += ["D", op.etag or "", "0", "0", b""]

        async def run(client: redis.asyncio.Redis) -> list[int]:
            if self._pipeline is not None:
                piped: list[int] = await self._piped_script(client, keys, args)
                return piped
            reply: list[int] = await self._script(keys=keys, args=args, client=client)
            return reply

        if self._cluster:
            topology.check_one_slot(keys)
        code, index = (int(x) for x in await self._call(run))
        if code == 1:
            raise etag_mismatch(keys[index - 1])
        if code == 2:
            raise first_write_conflict(keys[index - 1])
        if code != 0:
            raise StoreError(f"unexpected reply {code} from the redis write script")

    async def set(self, request: SetRequest) -> None:
        await self.transact([request])

    async def delete(self, request: DeleteRequest) -> None:
        await self.transact([request])

    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        raise QueryError("state store does not support querying: the Redis store has no query support")


def create(config: StoreConfig) -> RedisStore:
    return RedisStore(config)
