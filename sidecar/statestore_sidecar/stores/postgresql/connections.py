"""The PostgreSQL store's connections: each serves one call at a time, and calls wait their turn.

asyncpg's `Pool` cost a GET as much CPU as the statement itself: on every call it wraps the
connection in a proxy object, and on every release it runs a reset coroutine under a timeout of its
own and arms a timer for the connection's idleness. This keeps only what the store uses:

* connections are made on demand, up to `max_size`, and `min_size` of them at the start;
* when all are busy, callers wait in order, and a released connection goes straight to the first;
* a connection the caller could not finish cleanly is terminated (no round trip), never reused, and
  its place goes to the next caller, who makes a new one;
* a connection found closed (the server went away meanwhile) is dropped when it is next taken;
* idle connections beyond `min_size` are closed after `idle` seconds (0: never), by one sweep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg


class Connections:
    """A store's asyncpg connections: `acquire` one for a call, `release` it after (see above)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        min_size: int,
        max_size: int,
        idle: float,
    ) -> None:
        self._connect = connect
        self._min = min_size
        self._max = max(max_size, 1)
        self._idle_seconds = idle
        self._count = 0  # made or being made, and not terminated
        self._free: list[tuple[asyncpg.Connection, float]] = []  # (connection, released at): LIFO
        # A waiter gets a connection, or None: a place to make one in (already counted).
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def size(self) -> int:
        return self._count

    async def start(self) -> None:
        """Make `min_size` connections (the first failure is raised)."""
        while self._count < self._min:
            self.release(await self._make(), reuse=True)
        if self._idle_seconds > 0:
            self._arm_sweep()

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise ConnectionError("the connections are closed")
        while self._free:
            conn, _ = self._free.pop()
            if not conn.is_closed():
                return conn
            self._drop(conn)
        if self._count < self._max:
            return await self._make()
        waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over just before the cancellation
                handed = waiter.result()
                if handed is None:
                    self._count -= 1
                    self._next_may_make()
                else:
                    self.release(handed, reuse=True)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if conn is None:
            self._count -= 1  # _make counts it again
            return await self._make()
        return conn

    def release(self, conn: asyncpg.Connection, *, reuse: bool) -> None:
        """Give a connection back: to the first waiter, else to the free list; or terminate it."""
        if not reuse or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append((conn, asyncio.get_running_loop().time()))

    async def close(self) -> None:
        """Close every free connection politely (terminating what does not close in time); the
        busy ones are terminated as they come back."""
        free = self._shut()
        await asyncio.gather(*(_close(conn) for conn in free), *self._closing)

    def terminate(self) -> None:
        """As `close`, without waiting: the free connections are terminated."""
        for conn in self._shut():
            conn.terminate()

    def _shut(self) -> list[asyncpg.Connection]:
        """No more calls: the waiters fail; the free connections, no longer counted, are returned."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connections are closed"))
        self._waiters.clear()
        free, self._free = self._free, []
        self._count -= len(free)
        return [conn for conn, _ in free]

    async def _make(self) -> asyncpg.Connection:
        self._count += 1
        try:
            return await self._connect()
        except BaseException:
            self._count -= 1
            self._next_may_make()
            raise

    def _drop(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._count -= 1
        self._next_may_make()

    def _next_may_make(self) -> None:
        """A place was freed: the first waiter makes a connection in it."""
        while self._waiters and self._count < self._max:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._count += 1
                waiter.set_result(None)
                return

    def _arm_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(max(self._idle_seconds / 2, 0.5), self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle longer than the limit, keeping `min_size` in all."""
        if self._closed:
            return
        cutoff = asyncio.get_running_loop().time() - self._idle_seconds
        # The free list is LIFO: the longest idle are at its start.
        while self._free and self._free[0][1] < cutoff and self._count > self._min:
            conn, _ = self._free.pop(0)
            self._count -= 1
            task = asyncio.get_running_loop().create_task(_close(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._arm_sweep()


async def _close(conn: asyncpg.Connection) -> None:
    """Close an idle connection politely (the server logs no lost client); terminate it if that fails."""
    try:
        await conn.close(timeout=5)
    except Exception:
        conn.terminate()
