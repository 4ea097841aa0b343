"""`state.redis` on one node: GET and writes share one pipelined connection (stores/redis/pipelined.py).

What it must keep: every caller gets its own replies however many are in flight or cancelled, a
server that stops answering is reported (and the next call works once it answers again), and error
replies stay errors.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import AsyncIterator

import pytest

from fixtures.backends import RedisServer
from statestore_sidecar.schema import resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import BackendUnavailable, SetRequest, StoreError
from statestore_sidecar.stores.redis.store import RedisStore

pytestmark = pytest.mark.backends


async def make(metadata: dict[str, str]) -> RedisStore:
    store = create_store("state.redis", StoreConfig("piped", resolve(schema_for("state.redis"), metadata)))
    assert isinstance(store, RedisStore)
    await store.init()
    return store


@pytest.fixture
async def store(redis_metadata: dict[str, str]) -> AsyncIterator[RedisStore]:
    s = await make(redis_metadata)
    try:
        yield s
    finally:
        await s.close()


def key() -> str:
    return f"piped||{uuid.uuid4().hex}"


async def test_concurrent_calls_each_get_their_own_replies(
    store: RedisStore, redis_server: RedisServer
) -> None:
    keys = [key() for _ in range(300)]
    await asyncio.gather(*(store.set(SetRequest(k, b'"%d"' % i)) for i, k in enumerate(keys)))
    items = await asyncio.gather(*(store.get(k) for k in keys))
    assert [i.data if i else None for i in items] == [b'"%d"' % n for n in range(len(keys))]
    # Writes with etags, interleaved with reads, all in flight at once.
    etags = [i.etag for i in items if i is not None]
    await asyncio.gather(
        *(store.set(SetRequest(k, b"2", etag=e)) for k, e in zip(keys, etags, strict=True)),
        *(store.get(k) for k in keys),
    )
    assert {i.data for i in await asyncio.gather(*(store.get(k) for k in keys)) if i} == {b"2"}
    # One pipelined connection served all of it (plus the pool's, used at start-up).
    clients = redis_server.command("CLIENT", "LIST").decode().count("name=statestore-piped ")
    assert 1 <= clients <= 3


def _reads(server: RedisServer) -> int:
    """Redis' count of socket reads it has processed (each of our commands' own included)."""
    found = re.search(rb"total_reads_processed:(\d+)", server.command("INFO", "stats"))
    assert found is not None
    return int(found.group(1))


async def test_a_bulk_get_is_one_round_trip(store: RedisStore, redis_server: RedisServer) -> None:
    keys = [key() for _ in range(100)]
    await asyncio.gather(*(store.set(SetRequest(k, b'"%d"' % i)) for i, k in enumerate(keys)))
    absent = key()
    start = _reads(redis_server)
    counting = _reads(redis_server) - start  # what reading the counter itself adds
    before = _reads(redis_server)
    found = await store.bulk_get([*keys, absent])
    reads = _reads(redis_server) - before - counting
    assert {k: i.data for k, i in found.items()} == {k: b'"%d"' % n for n, k in enumerate(keys)}
    # Every HMGET and PTTL left in one write on the pipelined connection, and Redis read them at once
    # (through redis-py it took two round trips: the HMGETs, then the TTLs of the keys found).
    assert reads == 1


async def test_cancelled_callers_leave_the_replies_in_step(store: RedisStore) -> None:
    a, b = key(), key()
    await store.set(SetRequest(a, b'"a"'))
    await store.set(SetRequest(b, b'"b"'))
    for _ in range(50):
        cancelled = asyncio.ensure_future(store.get(a))
        await asyncio.sleep(0)  # sent, reply not yet read
        cancelled.cancel()
        item = await store.get(b)
        assert item is not None and item.data == b'"b"'


async def test_error_replies_are_errors(store: RedisStore, redis_server: RedisServer) -> None:
    k = key()
    redis_server.command("SET", k, "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        await store.get(k)
    with pytest.raises(StoreError, match="WRONGTYPE"):
        await store.set(SetRequest(k, b"1"))
    other = key()
    await store.set(SetRequest(other, b"1"))  # the connection is still in step
    item = await store.get(other)
    assert item is not None and item.data == b"1"


async def test_a_server_that_stops_answering_is_reported_then_recovers(
    redis_metadata: dict[str, str], redis_server: RedisServer
) -> None:
    s = await make({**redis_metadata, "readTimeout": "500ms", "dialTimeout": "500ms", "redisMaxRetries": "0"})
    try:
        k = key()
        await s.set(SetRequest(k, b"1"))
        assert await s.get(k) is not None
        # CLIENT PAUSE holds every client's commands for 3 s (this command's own connection excepted).
        paused = threading.Thread(target=redis_server.command, args=("CLIENT", "PAUSE", "3000", "ALL"))
        paused.start()
        paused.join()
        with pytest.raises(BackendUnavailable):
            await s.get(k)
        await asyncio.sleep(3.5)
        item = await s.get(k)
        assert item is not None and item.data == b"1"
        await s.set(SetRequest(k, b"2"))
        item = await s.get(k)
        assert item is not None and item.data == b"2"
    finally:
        await s.close()


def test_on_uvloop_as_the_server_runs_it(redis_metadata: dict[str, str]) -> None:
    # The sidecar's event loop is uvloop, whose transports are its own classes.
    import uvloop

    async def scenario() -> None:
        s = await make(redis_metadata)
        try:
            keys = [key() for _ in range(50)]
            await asyncio.gather(*(s.set(SetRequest(k, b'"%d"' % i)) for i, k in enumerate(keys)))
            items = await asyncio.gather(*(s.get(k) for k in keys))
            assert [i.data if i else None for i in items] == [b'"%d"' % n for n in range(len(keys))]
        finally:
            await s.close()

    uvloop.run(scenario())
