"""`state.redis` on a Redis Cluster and behind Sentinel, through the state API, against real servers.

The shared suites (test_state_api.py and the store conformance suite) already run on both topologies
(backends `redis_cluster` and `redis_sentinel`); these tests cover what is particular to each:
how Cluster transactions are bounded by hash slots, and a primary failing under load.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from fixtures.backends import RedisClusterSet
from fixtures.stores import ComponentUnderTest
from statestore_testing.databases import RedisSentinelSet, Server
from statestore_testing.databases.redis_ha import query

pytestmark = pytest.mark.backends

STATE = "/v1.0/state/store"
TX = "/v1.0/state/store/transaction"

MakeApi = Callable[..., Awaitable[httpx.AsyncClient]]


async def open_api(make_api: MakeApi, backend: str, metadata: dict[str, str]) -> httpx.AsyncClient:
    return await make_api({"store": ComponentUnderTest(backend, "state.redis", metadata)})


def upsert(key: str, value: object) -> dict[str, object]:
    return {"operation": "upsert", "request": {"key": key, "value": value}}


# --- Cluster ---------------------------------------------------------------------------------------


def local_keys(node: Server, pattern: str) -> set[str]:
    """The keys matching `pattern` that this one node holds (SCAN never redirects)."""
    found: set[str] = set()
    cursor = "0"
    while True:
        cursor, batch = query(node, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
        found.update(batch)
        if str(cursor) == "0":
            return found


async def test_cluster_spreads_keys_over_every_primary(
    make_api: MakeApi, redis_cluster_metadata: dict[str, str], redis_cluster_set: RedisClusterSet
) -> None:
    api = await open_api(make_api, "redis_cluster", redis_cluster_metadata)
    base = uuid.uuid4().hex[:8]
    keys = [f"{base}-{i}" for i in range(60)]
    r = await api.post(STATE, json=[{"key": k, "value": i} for i, k in enumerate(keys)])
    assert r.status_code == 204, r.text
    for i, k in enumerate(keys):
        got = await api.get(f"{STATE}/{k}")
        assert (got.status_code, got.json()) == (200, i)
    bulk = await api.post(f"{STATE}/bulk", json={"keys": keys})
    assert bulk.status_code == 200, bulk.text
    assert sorted((item["key"], item["data"]) for item in bulk.json()) == sorted(
        (k, i) for i, k in enumerate(keys)
    )
    # Each primary holds some of them (keys are stored as "myapp||<key>").
    held = [len(local_keys(node, f"myapp||{base}-*")) for node in redis_cluster_set.nodes]
    assert sum(held) == len(keys)
    assert all(count > 0 for count in held), held


async def test_cluster_transaction_in_one_slot_is_atomic(
    make_api: MakeApi, redis_cluster_metadata: dict[str, str]
) -> None:
    api = await open_api(make_api, "redis_cluster", redis_cluster_metadata)
    tag = "{order-" + uuid.uuid4().hex[:8] + "}"
    r = await api.post(TX, json={"operations": [upsert(f"{tag}items", [1, 2]), upsert(f"{tag}total", 3)]})
    assert r.status_code == 204, r.text
    assert (await api.get(f"{STATE}/{tag}total")).json() == 3
    etag = (await api.get(f"{STATE}/{tag}items")).headers["etag"]
    # A stale ETag on one operation: nothing of the transaction is written.
    stale = {"operation": "upsert", "request": {"key": f"{tag}total", "value": 4, "etag": "1"}}
    r = await api.post(TX, json={"operations": [upsert(f"{tag}items", [9]), stale]})
    assert (r.status_code, r.json()["errorCode"]) == (500, "ERR_STATE_TRANSACTION"), r.text
    assert "etag mismatch" in r.json()["message"]
    assert (await api.get(f"{STATE}/{tag}items")).headers["etag"] == etag
    assert (await api.get(f"{STATE}/{tag}total")).json() == 3


async def test_cluster_transaction_across_slots_is_refused_whole(
    make_api: MakeApi, redis_cluster_metadata: dict[str, str]
) -> None:
    api = await open_api(make_api, "redis_cluster", redis_cluster_metadata)
    base = uuid.uuid4().hex[:8]
    # Without a hash tag, twenty keys all landing in one of 16384 slots is practically impossible.
    operations = [upsert(f"{base}-{i}", i) for i in range(20)]
    r = await api.post(TX, json={"operations": operations})
    assert r.status_code == 500
    body = r.json()
    assert body["errorCode"] == "ERR_STATE_TRANSACTION"
    assert "one hash slot" in body["message"]
    assert "hash tag" in body["message"]
    for i in range(20):
        assert (await api.get(f"{STATE}/{base}-{i}")).status_code == 204


# --- Sentinel --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def protected_sentinels() -> Iterator[RedisSentinelSet]:
    """Three Sentinels with a password of their own (the shared set has none, for daprd's sake)."""
    with RedisSentinelSet(down_after_ms=1000) as servers:
        yield servers


def sentinel_metadata(servers: RedisSentinelSet) -> dict[str, str]:
    return {
        "redisHost": servers.sentinel_hosts,
        "redisPassword": servers.password,
        "failover": "true",
        "sentinelMasterName": servers.master_name,
        "sentinelPassword": servers.sentinel_password,
    }


async def test_sentinel_credentials_and_master_name_are_checked(
    protected_sentinels: RedisSentinelSet,
) -> None:
    from statestore_sidecar.schema import resolve
    from statestore_sidecar.stores import StoreConfig, create_store, schema_for
    from statestore_sidecar.stores.base import BackendUnavailable

    for change, expected in (
        ({"sentinelPassword": "wrong"}, "statestore-primary"),
        ({"sentinelMasterName": "no-such-primary"}, "no-such-primary"),
        ({"redisPassword": "wrong"}, "redis"),
    ):
        metadata = {**sentinel_metadata(protected_sentinels), "redisMaxRetries": "0", **change}
        store = create_store("state.redis", StoreConfig("s", resolve(schema_for("state.redis"), metadata)))
        with pytest.raises(BackendUnavailable, match=expected):
            await store.init()
        await store.close()
    right = {**sentinel_metadata(protected_sentinels), "redisMaxRetries": "0"}
    store = create_store("state.redis", StoreConfig("s", resolve(schema_for("state.redis"), right)))
    await store.init()
    await store.close()


async def until(what: str, condition: Callable[[], bool], deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@dataclass
class Load:
    """Writers saving numbered keys as fast as they can; what was acknowledged, what failed and when."""

    # key -> (value, when the request was sent, when it was acknowledged)
    acked: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    failures: list[tuple[float, int, str]] = field(default_factory=list)  # (when, status, errorCode)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def writer(self, api: httpx.AsyncClient, name: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"{name}-{n}"
            sent = time.monotonic()
            r = await api.post(STATE, json=[{"key": key, "value": n}])
            now = time.monotonic()
            if r.status_code == 204:
                self.acked[key] = (n, sent, now)
            else:
                self.failures.append((now, r.status_code, r.json()["errorCode"]))
                await asyncio.sleep(0.02)

    def sent_since(self, moment: float) -> list[tuple[int, float, float]]:
        """The acknowledged writes sent after `moment`."""
        return [entry for entry in self.acked.values() if entry[1] > moment]


async def test_sentinel_failover_under_load(make_api: MakeApi, protected_sentinels: RedisSentinelSet) -> None:
    """SIGKILL the primary while eight writers save: the store follows Sentinel to the promoted
    replica without a restart. Prints the figures docs/redis.md quotes."""
    servers = protected_sentinels
    api = await open_api(make_api, "redis_sentinel", sentinel_metadata(servers))
    old_primary = servers.current_primary()
    load = Load()
    run = uuid.uuid4().hex[:6]
    writers = [asyncio.create_task(load.writer(api, f"{run}-w{i}")) for i in range(8)]
    try:
        await until("200 writes before the kill", lambda: len(load.acked) >= 200, time.monotonic() + 60)
        killed_at = time.monotonic()
        servers.server_at(old_primary).stop(kill=True)
        deadline = killed_at + 120
        await until(
            "writes to fail and then resume after the primary was killed",
            lambda: bool(load.failures) and bool(load.sent_since(killed_at)),
            deadline,
        )
        resumed_at = min(acked for _, _, acked in load.sent_since(killed_at))
        await until(
            "200 writes on the new primary", lambda: len(load.sent_since(resumed_at)) >= 200, deadline
        )
    finally:
        load.stop.set()
        await asyncio.gather(*writers)

    new_primary = servers.current_primary()
    assert new_primary != old_primary
    # Every failed request got a complete error answer, never a hang or a traceback.
    assert {(status, code) for _, status, code in load.failures} <= {(500, "ERR_STATE_SAVE")}
    # Every write sent after the kill and acknowledged is there. Writes the old primary
    # acknowledged can be lost (asynchronous replication): counted, not hidden.
    lost_old, lost_new = 0, 0
    for key, (value, sent, _) in load.acked.items():
        r = await api.get(f"{STATE}/{key}")
        if r.status_code == 200:
            assert r.json() == value
        elif sent <= killed_at:
            lost_old += 1
        else:
            lost_new += 1
    assert lost_new == 0
    acked_old = len(load.acked) - len(load.sent_since(killed_at))
    print(
        f"\nsentinel failover: writes succeeded again {resumed_at - killed_at:.2f}s after "
        f"SIGKILL of the primary (down-after-milliseconds 1000); {len(load.failures)} requests "
        f"failed meanwhile with 500 ERR_STATE_SAVE; {lost_old} of {acked_old} writes the old "
        f"primary acknowledged were lost; {len(load.sent_since(killed_at))} acknowledged "
        "after the kill, none lost"
    )
