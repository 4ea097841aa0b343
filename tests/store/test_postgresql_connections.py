"""`state.postgresql`'s connections against a real server: how many it opens, how calls wait for
one, and when idle ones close. The server's own view (`pg_stat_activity`, by application name) is
what is counted."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from fixtures.backends import PostgresServer, postgres_rows
from fixtures.stores import built_as, initialised
from statestore_sidecar.stores.base import BackendUnavailable, SetRequest
from statestore_sidecar.stores.postgresql.connections import Connections
from statestore_sidecar.stores.postgresql.store import PostgresStore
from statestore_testing.waiting import wait_for_async


class Setup:
    def __init__(self, server: PostgresServer, metadata: dict[str, str]) -> None:
        self.server = server
        self.app = f"conns-{uuid.uuid4().hex[:10]}"
        self.table = metadata["tableName"]
        self.metadata = {
            **metadata,
            "connectionString": f"{server.connection_string()} application_name={self.app}",
        }

    def store(self, **metadata: str) -> PostgresStore:
        return built_as(PostgresStore, "state.postgresql", {**self.metadata, **metadata}, "pg-conns")

    async def connections_are(self, count: int) -> None:
        """Wait until the server counts `count` (a closed session leaves its list a moment later)."""

        async def done() -> bool:
            return await self.connections() == count

        await wait_for_async(f"{count} connections", done, seconds=20)

    async def connections(self) -> int:
        rows = await postgres_rows(
            self.server, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
        )
        count: int = rows[0][0]
        return count

    @contextlib.asynccontextmanager
    async def table_locked(self) -> AsyncIterator[None]:
        """Every statement on the table waits until the block ends."""
        admin = await asyncpg.connect(self.server.connection_string(form="url"))
        try:
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{self.table}" IN ACCESS EXCLUSIVE MODE')
                yield
        finally:
            await admin.close()


@pytest.fixture
def setup(postgres_server: PostgresServer, postgresql_metadata: dict[str, str]) -> Setup:
    return Setup(postgres_server, postgresql_metadata)


@pytest.mark.backends
async def test_calls_beyond_max_conns_wait_their_turn(setup: Setup) -> None:
    async with initialised(setup.store(maxConns="2", timeout="20s")) as store:
        await store.set(SetRequest("k", b'{"n":1}'))
        async with setup.table_locked():
            calls = [asyncio.create_task(store.get("k")) for _ in range(10)]

            await setup.connections_are(2)
            await asyncio.sleep(0.5)
            assert await setup.connections() == 2  # the other eight calls wait for one of them
            assert not any(call.done() for call in calls)
        items = await asyncio.gather(*calls)
        assert all(item is not None and item.data == b'{"n": 1}' for item in items)
        assert await setup.connections() == 2


@pytest.mark.backends
async def test_a_call_that_waits_past_the_timeout_is_unavailable_and_leaves_no_trace(setup: Setup) -> None:
    async with initialised(setup.store(maxConns="1", timeout="1s")) as store:
        await store.set(SetRequest("k", b'{"n":1}'))
        async with setup.table_locked():
            # The first holds the connection (then times out), the second never gets one.
            results = await asyncio.gather(store.get("k"), store.get("k"), return_exceptions=True)
            assert all(isinstance(r, BackendUnavailable) for r in results), results
        # The connection of the call that timed out was dropped; a new one serves the next calls.
        for _ in range(3):
            item = await store.get("k")
            assert item is not None
        await setup.connections_are(1)


@pytest.mark.backends
async def test_idle_connections_close_after_connection_max_idle_time(setup: Setup) -> None:
    async with initialised(setup.store(maxConns="3", connectionMaxIdleTime="1s")) as store:
        await asyncio.gather(*(store.set(SetRequest(f"k{i}", b"1")) for i in range(6)))
        assert await setup.connections() >= 1

        await setup.connections_are(0)  # all closed, idle for longer than a second
        assert await store.get("k1") is not None  # and a call opens one again
        assert await setup.connections() == 1


@pytest.mark.backends
async def test_pool_min_conns_are_opened_at_start_and_kept(setup: Setup) -> None:
    setup.metadata["connectionString"] += " pool_min_conns=2"
    async with initialised(setup.store(connectionMaxIdleTime="1s")):
        assert await setup.connections() == 2
        await asyncio.sleep(2.5)  # past the idle time: the minimum stays
        assert await setup.connections() == 2
    await setup.connections_are(0)  # closed with the store


@pytest.mark.backends
async def test_closing_the_store_closes_its_connections(setup: Setup) -> None:
    async with initialised(setup.store(maxConns="4")) as store:
        await asyncio.gather(*(store.set(SetRequest(f"k{i}", b"1")) for i in range(8)))
        assert await setup.connections() >= 1
    await setup.connections_are(0)


# --- the hand-over rules, with stand-in connections (timing a real server cannot pin down) --------


class StandIn:
    """What `Connections` uses of an asyncpg connection."""

    def __init__(self) -> None:
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        self.terminated = True

    async def close(self, **_: float) -> None:
        self.terminated = True


def stand_in_connections(max_size: int) -> tuple[Connections, list[StandIn]]:
    made: list[StandIn] = []

    async def connect() -> Any:
        made.append(StandIn())
        return made[-1]

    return Connections(connect, min_size=0, max_size=max_size, idle=0), made


async def test_a_connection_handed_to_a_waiter_cancelled_meanwhile_is_not_lost() -> None:
    conns, made = stand_in_connections(1)
    first = await conns.acquire()
    waiting = asyncio.create_task(conns.acquire())
    await asyncio.sleep(0)  # now waiting
    conns.release(first, reuse=True)  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await conns.acquire() is first and len(made) == 1 and conns.size == 1


async def test_a_dropped_connection_gives_its_place_to_the_first_waiter() -> None:
    conns, made = stand_in_connections(1)
    first = await conns.acquire()
    waiters = [asyncio.create_task(conns.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    conns.release(first, reuse=False)  # terminated: the first waiter makes a new one
    second = await waiters[0]
    assert second is made[1] and made[0].terminated and not waiters[1].done()
    conns.release(second, reuse=True)
    assert await waiters[1] is second and conns.size == 1


async def test_a_cancelled_waiter_given_a_place_passes_it_on() -> None:
    conns, made = stand_in_connections(1)
    first = await conns.acquire()
    waiters = [asyncio.create_task(conns.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    conns.release(first, reuse=False)  # the place goes to the first waiter...
    waiters[0].cancel()  # ...cancelled before it could make a connection
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    assert await waiters[1] is made[1] and conns.size == 1


async def test_closing_fails_the_waiters_and_drops_what_comes_back() -> None:
    conns, _ = stand_in_connections(1)
    first = await conns.acquire()
    waiting = asyncio.create_task(conns.acquire())
    await asyncio.sleep(0)
    await conns.close()
    with pytest.raises(ConnectionError):
        await waiting
    conns.release(first, reuse=True)
    assert first.terminated and conns.size == 0
    with pytest.raises(ConnectionError):
        await conns.acquire()
