"""One Redis connection shared by all concurrent calls, pipelined, replies parsed by hiredis.

The single-node store sends its hot commands (GET's HMGET + PTTL, the write script) here instead of
through redis-py: each call writes its commands at once and awaits a future that `data_received`
resolves when its replies have arrived (replies come back in the order the commands were sent). No
pool, no per-command timeouts or wrappers, and calls arriving together leave in one socket write.

Failures surface as redis-py's exceptions, so the store maps them as it maps redis-py's: a closed
or broken connection is `ConnectionError` (the store then runs the call through redis-py, with its
retries, and the next call connects again); an error reply is a `ResponseError` value returned in
place of the reply. TLS, Sentinel and Cluster stay with redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError


def encode(*parts: bytes | str) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        # One entry per call, in sending order: its future, replies expected, replies so far.
        self.waiting: collections.deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = (
            collections.deque()
        )
        self.error: Exception | None = None
        # When a reply last arrived, or the first of the calls now waiting was sent.
        self.progress = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.progress = time.monotonic()
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            reply = reader.gets()
            while reply is not False:
                if not waiting:  # a reply nobody asked for: the stream is out of step
                    self.fail(ConnectionError("redis: unexpected reply"))
                    return
                future, count, replies = waiting[0]
                replies.append(reply)
                if len(replies) == count:
                    waiting.popleft()
                    if not future.done():  # a cancelled caller's replies are read and dropped
                        future.set_result(replies)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self.fail(ConnectionError(f"redis: protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"redis: connection closed{f': {exc}' if exc else ''}"))

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)


class Pipeline:
    """A lazily (re)connected, pipelined connection to one Redis node."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int,
        username: str | None,
        password: str | None,
        client_name: str,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.host, self.port = host, port
        setup = []
        if password is not None:
            setup.append(encode("AUTH", *([username] if username else []), password))
        setup.append(encode("CLIENT", "SETNAME", client_name))
        if db:
            setup.append(encode("SELECT", str(db)))
        self._setup = setup
        self._connect_timeout = max(connect_timeout, 0.1)
        self._read_timeout = max(read_timeout, 0.1)
        self._idle_timeout = idle_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            transport, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            future: asyncio.Future[list[Any]] = loop.create_future()
            protocol.waiting.append((future, len(self._setup), []))
            transport.write(b"".join(self._setup))
            try:
                replies = await future
            except BaseException:
                transport.abort()
                raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                transport.abort()
                text = str(reply)
                if text.startswith(("WRONGPASS", "NOAUTH", "ERR invalid password", "ERR AUTH")):
                    raise AuthenticationError(text)
                raise reply
        return protocol

    def _usable(self, protocol: _Protocol | None, now: float) -> bool:
        if protocol is None or protocol.error is not None:
            return False
        if protocol.waiting:
            # Calls are waiting: if nothing has come back for longer than a read may take, the
            # connection is dead (the timed-out caller does not see this; the next one does).
            if now - protocol.progress <= self._read_timeout:
                return True
            protocol.fail(ConnectionError("redis: no reply within readTimeout"))
            return False
        if not self._idle_timeout or now - protocol.progress <= self._idle_timeout:
            return True
        protocol.fail(ConnectionError("redis: idle connection replaced"))  # as redis-py's health check
        return False

    async def _connection(self) -> _Protocol:
        self._protocol = None
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._protocol = protocol
        return protocol

    async def call(self, commands: Sequence[bytes]) -> list[Any]:
        """The replies to `commands` (RESP-encoded), in order; error replies as ResponseError values."""
        protocol = self._protocol
        now = time.monotonic()
        if protocol is None or not self._usable(protocol, now):
            protocol = await self._connection()
        transport = protocol.transport
        assert transport is not None
        waiting = protocol.waiting
        if not waiting:
            protocol.progress = now
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        waiting.append((future, len(commands), []))
        transport.write(commands[0] if len(commands) == 1 else b"".join(commands))
        return await future

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(ConnectionError("redis: store closed"))
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
