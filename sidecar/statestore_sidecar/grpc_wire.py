"""Unary gRPC over HTTP/2, served by an asyncio protocol on the server's event loop.

Every method the state API serves is unary: one request message, one reply or one status. This
package of modules speaks exactly that much of gRPC (length-prefixed messages, `grpc-timeout`,
gzip-compressed requests, statuses with `grpc-status-details-bin` in the trailers) over as much
HTTP/2 as clients use: flow control both ways, SETTINGS, PING, CONTINUATION, RST_STREAM and GOAWAY.
grpcio's server does the same work through its C core, a completion-queue thread and a coroutine per
call, and costs several times the CPU per call (`bench/README.md`). What a call does is the router's
business (`grpc_api.DaprService`): it maps a path and the request headers to a handler of message
bytes. Here is the listener; one connection's state machine is `grpc_connection`, the call layer's
pure parts `grpc_calls`, the frames `http2_frames`, request headers `header_blocks`.
"""

from __future__ import annotations

import asyncio
import time

from .grpc_calls import Router
from .grpc_connection import GrpcConnection


class GrpcWireServer:
    """The listener: connections in, a router's handlers behind them."""

    def __init__(self, router: Router, limit: int) -> None:
        self.router = router
        self.limit = limit
        self.connections: set[GrpcConnection] = set()
        self.calls = 0
        self.stopping = False
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int, *, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GrpcConnection(self), host, port, reuse_port=reuse_port or None, backlog=2048
        )

    async def stop(self, grace: float) -> None:
        """Close the port, tell every client to go away, give the calls in flight `grace` seconds."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        deadline = time.monotonic() + grace
        # Two conditions in many objects, polled only while stopping.
        while (self.calls or any(c.blocked for c in self.connections)) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # let the last replies reach the transports
        for connection in list(self.connections):
            connection.close()
