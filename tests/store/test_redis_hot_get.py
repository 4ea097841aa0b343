"""`state.redis`'s hot GET (a connection kept between calls, past redis-py's client layer).

What it must not change: a dropped connection is invisible to the caller, the other commands never
starve for connections, and closing the store leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from fixtures.backends import RedisServer
from statestore_sidecar.schema import resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import SetRequest
from statestore_sidecar.stores.redis.store import RedisStore

pytestmark = pytest.mark.backends


async def make(metadata: dict[str, str]) -> RedisStore:
    store = create_store("state.redis", StoreConfig("hot", resolve(schema_for("state.redis"), metadata)))
    assert isinstance(store, RedisStore)
    await store.init()
    return store


@pytest.fixture
async def small_pool(redis_metadata: dict[str, str]) -> AsyncIterator[RedisStore]:
    store = await make({**redis_metadata, "poolSize": "2", "poolTimeout": "2s"})
    try:
        yield store
    finally:
        await store.close()


def hot_clients(server: RedisServer) -> int:
    """Connections of the store under test, as the Redis server lists them."""
    return server.command("CLIENT", "LIST").decode().count("name=statestore-hot ")


def key() -> str:
    return f"hot||{uuid.uuid4().hex}"


async def test_get_after_the_server_dropped_the_connection(
    small_pool: RedisStore, redis_server: RedisServer
) -> None:
    k = key()
    await small_pool.set(SetRequest(k, b'"v"'))
    assert (await small_pool.get(k)) is not None
    assert hot_clients(redis_server) >= 1
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # every client connection but this one
    item = await small_pool.get(k)
    assert item is not None and item.data == b'"v"'
    assert (await small_pool.get(k)) is not None


async def test_kept_connections_never_starve_other_commands(
    small_pool: RedisStore, redis_server: RedisServer
) -> None:
    # poolSize 2: the hot GET keeps at most one, so writes (and bulk gets) always find the other.
    keys = [key() for _ in range(20)]
    for k in keys:
        await small_pool.set(SetRequest(k, b"1"))

    async def reader() -> None:
        for k in keys:
            assert (await small_pool.get(k)) is not None

    async def writer() -> None:
        for k in keys:
            await small_pool.set(SetRequest(k, b"2"))
            assert len(await small_pool.bulk_get(keys[:5])) == 5

    await asyncio.wait_for(asyncio.gather(*(reader() for _ in range(8)), writer(), writer()), 30)
    assert hot_clients(redis_server) <= 2  # the pool's size: nothing kept beside it


async def test_close_releases_kept_connections(
    redis_metadata: dict[str, str], redis_server: RedisServer
) -> None:
    store = await make(redis_metadata)
    k = key()
    await store.set(SetRequest(k, b"1"))
    await asyncio.gather(*(store.get(k) for _ in range(10)))
    assert hot_clients(redis_server) >= 1
    await store.close()
    clients = redis_server.command("CLIENT", "LIST").decode()
    assert "name=statestore-hot " not in clients
