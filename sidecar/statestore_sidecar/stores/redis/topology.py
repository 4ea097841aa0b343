"""The redis-py client for each `state.redis` topology: one node, Sentinel (`failover: true`), Cluster.

`options` are the connection settings every topology shares (credentials, timeouts, retries, TLS);
`pool_size` bounds the connections to the primary (per primary on a Cluster).

* Node: a blocking pool on one address, as before.
* Sentinel: the Sentinels named in `redisHost` are asked for the primary of `sentinelMasterName`
  whenever a connection opens. When the primary changes, idle connections to the old one are
  dropped, and a write that reaches a demoted primary (READONLY) drops its connection, so requests
  reach the new primary without a restart once Sentinel has promoted it.
* Cluster: the seed nodes in `redisHost` give the slot map; every command goes to the primary of its
  key's slot, following MOVED/ASK redirects and reloading the map when a node fails. A bulk get
  reads each slot's keys with one script call (`cluster_hmget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import StoreError

if TYPE_CHECKING:
    import redis.asyncio


def node_client(
    address: tuple[str, int], options: dict[str, Any], pool_size: int, pool_timeout: float
) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import BlockingConnectionPool, Connection, SSLConnection

    settings = dict(options)
    tls = settings.pop("ssl", False)
    pool = BlockingConnectionPool(
        max_connections=pool_size,
        timeout=pool_timeout,
        connection_class=SSLConnection if tls else Connection,
        host=address[0],
        port=address[1],
        **settings,
    )
    return aioredis.Redis(connection_pool=pool)


def sentinel_client(
    sentinels: Sequence[tuple[str, int]],
    primary_name: str,
    *,
    sentinel_auth: dict[str, Any],
    options: dict[str, Any],
    pool_size: int,
    pool_timeout: float,
) -> redis.asyncio.Redis:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Waits up to `poolTimeout` for a free connection, like the single-node pool."""

    settings = {k: v for k, v in options.items() if k not in ("db", "username", "password", "client_name")}
    sentinel_kwargs = {**settings, **sentinel_auth}
    manager = Sentinel(list(sentinels), min_other_sentinels=0, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: redis.asyncio.Redis = manager.master_for(
        primary_name,
        redis_class=aioredis.Redis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=pool_size,
        timeout=pool_timeout,
        **options,
    )
    return client


def cluster_client(seeds: Sequence[tuple[str, int]], options: dict[str, Any], *, pool_size: int) -> Any:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    settings = {k: v for k, v in options.items() if k != "db"}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        max_connections=pool_size,
        require_full_coverage=True,
        **settings,
    )


def hash_slot(key: str) -> int:
    """The Cluster hash slot of a stored key (its `{hash tag}` when it has one)."""
    from redis.crc import key_slot

    return int(key_slot(key.encode()))


# HMGET of every key (all in one slot) in one call: a Cluster bulk get sends one command per slot
# instead of one per key, as redis-py's Cluster pipeline spends most of its time per command.
_READ_SLOT_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'data', 'version')
  out[i] = {fields[1], fields[2], redis.call('PTTL', key)}
end
return out
"""


def slot_batches(keys: Sequence[str], size: int) -> list[list[list[str]]]:
    """The keys grouped by hash slot, the groups in batches of about `size` keys."""
    from redis.crc import key_slot

    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    batches: list[list[list[str]]] = [[]]
    count = 0
    for group in groups.values():
        if count >= size:
            batches.append([])
            count = 0
        batches[-1].append(group)
        count += len(group)
    return batches


async def cluster_hmget(client: Any, groups: Sequence[Sequence[str]]) -> list[Any]:
    """HMGET data, version and the PTTL of every key of `groups` (each one slot), in the groups' order."""
    async with client.pipeline(transaction=False) as pipe:
        for group in groups:
            pipe.eval(_READ_SLOT_SCRIPT, len(group), *group)
        replies = await pipe.execute(raise_on_error=False)
    flat: list[Any] = []
    for group, reply in zip(groups, replies, strict=True):
        flat.extend([reply] * len(group) if isinstance(reply, Exception) else reply)
    return flat


def check_one_slot(keys: Sequence[str]) -> None:
    """A Cluster runs a script on one node: the keys of a transaction must share a hash slot."""
    slots = {hash_slot(key) for key in keys}
    if len(slots) > 1:
        raise StoreError(
            "redis cluster: the keys of a transaction must share one hash slot "
            f"(they map to {len(slots)} slots); give the keys a common hash tag, "
            "such as {order-17}items and {order-17}total"
        )
