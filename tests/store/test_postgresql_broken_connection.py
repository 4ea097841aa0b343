"""`state.postgresql` with a pooled connection the server has dropped but whose socket is still open.

When PostgreSQL ends a session (a crash, a restart, `pg_terminate_backend`) it first sends the idle
connection a FATAL error, then closes it. Between the two, asyncpg holds a connection it cannot use
("cannot switch to state ...; another operation is in progress") that still looks open. A
proxy in front of the real server holds the close back, so that moment lasts as long as the test
needs: the call on that connection must fail as unavailability, and the next must work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fixtures.backends import PostgresServer
from fixtures.stores import built_as, initialised
from statestore_sidecar.stores.base import BackendUnavailable, SetRequest
from statestore_sidecar.stores.postgresql.store import PostgresStore

pytestmark = pytest.mark.backends


class CloseHoldingProxy:
    """A TCP proxy that forwards every byte, but keeps the client's end open after the server closed
    its end, until `release()`."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._released = asyncio.Event()
        self.server_closed = asyncio.Event()
        self.upstream_ports: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            self.release()
            server.close()
            for task in self._tasks:
                task.cancel()

    def release(self) -> None:
        self._released.set()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_in, server_out = await asyncio.open_connection(*self._target)
        self.upstream_ports.append(int(server_out.get_extra_info("sockname")[1]))

        async def upstream() -> None:
            while data := await client_in.read(65536):
                server_out.write(data)
                await server_out.drain()
            server_out.close()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                client_out.write(data)
                await client_out.drain()
            self.server_closed.set()
            await self._released.wait()
            client_out.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())


async def test_a_connection_the_server_ended_is_unavailable_then_replaced(
    postgres_server: PostgresServer, postgresql_metadata: dict[str, str]
) -> None:
    proxy = CloseHoldingProxy(postgres_server.host, postgres_server.port)
    async with proxy.running() as port:
        through_proxy = postgres_server.connection_string().replace(
            f"port={postgres_server.port}", f"port={port}"
        )
        assert through_proxy != postgres_server.connection_string()
        metadata = {**postgresql_metadata, "connectionString": through_proxy, "maxConns": "1"}
        async with initialised(built_as(PostgresStore, "state.postgresql", metadata, "pg-test")) as store:
            await store.set(SetRequest("k", b'{"n":1}'))
            assert proxy.upstream_ports, "the store connected through the proxy"

            admin = await asyncpg.connect(postgres_server.connection_string(form="url"))
            try:
                ended = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_port = ANY($1)",
                    proxy.upstream_ports,
                )
            finally:
                await admin.close()
            assert ended == 1
            await asyncio.wait_for(proxy.server_closed.wait(), 10)
            await asyncio.sleep(0.2)  # the store's side reads the FATAL error; its socket stays open

            with pytest.raises(BackendUnavailable):
                await store.get("k")
            # That connection was dropped, not pooled again: the next call gets a new one.
            item = await store.get("k")
            assert item is not None and json.loads(item.data) == {"n": 1}
