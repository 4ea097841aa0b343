"""One HTTP/2 connection of the gRPC server (`grpc_wire`): frames in, calls dispatched as tasks,
replies framed out. Over the usual length: a connection's state machine reads best whole.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from hpack.exceptions import HPACKError

from . import http2_frames as h2
from .grpc_calls import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    RESOURCE_EXHAUSTED,
    UNKNOWN,
    GrpcStatus,
    Handler,
    Headers,
    request_message,
    status_block,
    timeout_of,
)
from .header_blocks import HeaderBlocks

if TYPE_CHECKING:
    from .grpc_wire import GrpcWireServer

log = logging.getLogger("statestore.grpc")

# What the server grants: per stream and for the whole connection, replenished as data arrives.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
MAX_FRAME = 1 << 20
MAX_HEADER_LIST = 1 << 16
# A PING ACK waits at most this long for a reply to ride with. grpc-go pings with the window update
# after each reply it reads (its bandwidth estimate), so at low rates every call brought one ping,
# and its ACK cost a write of its own: ~10% of a call's CPU.
ACK_HOLD_SECONDS = 0.002
_SETTINGS = h2.settings(
    [
        (h2.SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
        (h2.SETTINGS_MAX_FRAME_SIZE, MAX_FRAME),
        (h2.SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
    ]
)
_GREETING = _SETTINGS + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)
_OK_TRAILERS = h2.literal(b"grpc-status", b"0")


class _ConnectionError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Stream:
    __slots__ = (
        "body",
        "checked",
        "handler",
        "headers",
        "id",
        "pending",
        "size",
        "task",
        "unacked",
        "window",
    )

    def __init__(self, stream_id: int, handler: Handler, headers: Headers, window: int) -> None:
        self.id = stream_id
        self.handler = handler
        self.headers = headers
        self.window = window  # what the client lets us send on this stream
        self.body: list[bytes] = []
        self.size = 0
        self.checked = False  # the length prefix, once it has arrived
        self.unacked = 0
        self.task: asyncio.Task[None] | None = None
        self.pending = memoryview(b"")  # reply bytes waiting for the client's flow-control window


class GrpcConnection(asyncio.Protocol):
    """One client connection: frames in, calls dispatched as tasks, replies framed out."""

    def __init__(self, server: GrpcWireServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.preface = False
        self.header_blocks = HeaderBlocks(MAX_HEADER_LIST)
        self.streams: dict[int, _Stream] = {}
        self.blocked: dict[int, _Stream] = {}
        self.last_stream = 0
        self.send_window = h2.DEFAULT_WINDOW
        self.peer_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = h2.DEFAULT_MAX_FRAME
        self.received = 0
        self.continued: tuple[int, int, bytearray] | None = None  # stream, flags, header block so far
        self.going_away = False
        self.running = 0  # calls not finished yet
        self.acks: list[bytes] = []  # PING ACKs held for the next reply (ACK_HOLD_SECONDS)
        self.ack_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's
        transport = self.transport
        self.server.connections.add(self)
        transport.write(_GREETING)
        if self.server.stopping:
            self.go_away()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.ack_timer is not None:
            self.ack_timer.cancel()
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        try:
            self._receive(data, out)
        except _ConnectionError as exc:
            self._fail(out, exc.code)
        except HPACKError:
            self._fail(out, h2.COMPRESSION_ERROR)
        if self.acks:
            if out or not self.running:
                self._take_acks(out)
            elif self.ack_timer is None:
                self.ack_timer = asyncio.get_running_loop().call_later(ACK_HOLD_SECONDS, self._send_acks)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _take_acks(self, out: list[bytes]) -> None:
        out[:0] = self.acks
        self.acks = []
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None

    def _send_acks(self) -> None:
        self.ack_timer = None
        if self.acks and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.acks))
        self.acks = []

    # -- frames in ----------------------------------------------------------------------------------

    def _receive(self, data: bytes, out: list[bytes]) -> None:
        buffer = self.buffer + data if self.buffer else data
        position = 0
        if not self.preface:
            if len(buffer) < len(h2.PREFACE):
                if not h2.PREFACE.startswith(buffer):
                    raise _ConnectionError(h2.PROTOCOL_ERROR)
                self.buffer = buffer
                return
            if not buffer.startswith(h2.PREFACE):
                raise _ConnectionError(h2.PROTOCOL_ERROR)
            self.preface = True
            position = len(h2.PREFACE)
        end_of_data = len(buffer)
        while end_of_data - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if length > MAX_FRAME:
                raise _ConnectionError(h2.FRAME_SIZE_ERROR)
            end = position + 9 + length
            if end > end_of_data:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = int.from_bytes(buffer[position + 5 : position + 9], "big") & 0x7FFF_FFFF
            payload = buffer[position + 9 : end]
            position = end
            if self.continued is not None and (kind != h2.CONTINUATION or stream != self.continued[0]):
                raise _ConnectionError(h2.PROTOCOL_ERROR)
            if kind == h2.DATA:
                self._on_data(stream, flags, payload, out)
            elif kind == h2.HEADERS:
                self._on_headers_frame(stream, flags, payload, out)
            elif kind == h2.CONTINUATION:
                self._on_continuation(stream, flags, payload, out)
            elif kind == h2.SETTINGS:
                self._on_settings(flags, payload, out)
            elif kind == h2.WINDOW_UPDATE:
                self._on_window_update(stream, payload, out)
            elif kind == h2.PING:
                if len(payload) != 8:
                    raise _ConnectionError(h2.FRAME_SIZE_ERROR)
                if not flags & h2.ACK:
                    self.acks.append(h2.frame(h2.PING, h2.ACK, 0, payload))
            elif kind == h2.RST_STREAM:
                self._reset(stream)
            elif kind == h2.PUSH_PROMISE:
                raise _ConnectionError(h2.PROTOCOL_ERROR)
            # PRIORITY, GOAWAY (the client stops opening streams; ours finish) and unknown types.
        self.buffer = buffer[position:]
        if self.received >= CONNECTION_WINDOW // 2:
            out.append(h2.window_update(0, self.received))
            self.received = 0

    def _on_data(self, stream_id: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        self.received += len(payload)  # padding counts against the window too
        stream = self.streams.get(stream_id)
        if stream is None or stream.task is not None:
            return  # a stream already answered or reset: its data only needs the window back
        if flags & h2.PADDED:
            payload = payload[1 : len(payload) - payload[0]] if payload else b""
        stream.body.append(payload)
        stream.size += len(payload)
        limit = self.server.limit
        if stream.size >= 5 and not stream.checked:
            # The prefix states the message's length: one over the limit is refused before it arrives.
            stream.checked = True
            stated = int.from_bytes(b"".join(stream.body)[1:5], "big")
            if stated > limit:
                message = f"grpc: received message larger than max ({stated} vs. {limit})"
                self._refuse(
                    stream_id, GrpcStatus(RESOURCE_EXHAUSTED, message), not flags & h2.END_STREAM, out
                )
                self.streams.pop(stream_id, None)
                return
        if stream.size > limit + 5:  # more than the prefix stated: refused by request_message anyway
            message = "grpc: a unary call takes exactly one request message"
            self._refuse(stream_id, GrpcStatus(INTERNAL, message), not flags & h2.END_STREAM, out)
            self.streams.pop(stream_id, None)
            return
        if flags & h2.END_STREAM:
            self._start(stream, out)
            return
        stream.unacked += len(payload)
        if stream.unacked >= STREAM_WINDOW // 2:
            out.append(h2.window_update(stream_id, stream.unacked))
            stream.unacked = 0

    def _on_headers_frame(self, stream_id: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if stream_id == 0:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        start, end = 0, len(payload)
        if flags & h2.PADDED:
            start, end = 1, end - payload[0]
        if flags & h2.PRIORITY_FLAG:
            start += 5
        if start > end:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        fragment = payload[start:end]
        if flags & h2.END_HEADERS:
            self._on_headers(stream_id, bool(flags & h2.END_STREAM), fragment, out)
        else:
            self.continued = (stream_id, flags, bytearray(fragment))

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes, out: list[bytes]) -> None:
        if self.continued is None:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        self.continued[2].extend(payload)
        if len(self.continued[2]) > MAX_HEADER_LIST * 2:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        if flags & h2.END_HEADERS:
            _, first_flags, block = self.continued
            self.continued = None
            self._on_headers(stream_id, bool(first_flags & h2.END_STREAM), bytes(block), out)

    def _on_headers(self, stream_id: int, end_stream: bool, block: bytes, out: list[bytes]) -> None:
        headers = self.header_blocks.decode(block)
        known = self.streams.get(stream_id)
        if known is not None:  # trailers after a request's data
            if end_stream and known.task is None:
                self._start(known, out)
            return
        if not stream_id & 1:
            raise _ConnectionError(h2.PROTOCOL_ERROR)
        if stream_id <= self.last_stream:
            return  # a stream already answered: the client's late trailers change nothing
        self.last_stream = stream_id
        if self.going_away:
            out.append(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        if headers.get(b":method") != b"POST" or not headers.get(b"content-type", b"").startswith(
            b"application/grpc"
        ):
            status = h2.literal_indexed_name(8, b"415")  # static entry 8 names ":status"
            out.append(h2.header_frames(stream_id, status, True, self.peer_max_frame))
            if not end_stream:
                out.append(h2.rst_stream(stream_id, h2.NO_ERROR))
            return
        try:
            handler = self.server.router.route(headers.get(b":path", b""), headers)
        except GrpcStatus as status:
            self._refuse(stream_id, status, not end_stream, out)
            return
        stream = _Stream(stream_id, handler, headers, self.peer_window)
        self.streams[stream_id] = stream
        if end_stream:
            self._start(stream, out)

    def _on_settings(self, flags: int, payload: bytes, out: list[bytes]) -> None:
        if flags & h2.ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(h2.FRAME_SIZE_ERROR)
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise _ConnectionError(h2.FLOW_CONTROL_ERROR)
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value < 1 << 24:
                    raise _ConnectionError(h2.PROTOCOL_ERROR)
                self.peer_max_frame = value
            # The header table size binds only encoders that index; the server never does.
        out.append(h2.frame(h2.SETTINGS, h2.ACK, 0))
        self._flush_blocked(out)

    def _on_window_update(self, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        if len(payload) != 4:
            raise _ConnectionError(h2.FRAME_SIZE_ERROR)
        increment = h2.u32(payload)
        if stream_id == 0:
            self.send_window += increment
            if self.send_window > h2.MAX_WINDOW:
                raise _ConnectionError(h2.FLOW_CONTROL_ERROR)
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.window += increment
        self._flush_blocked(out)

    def _reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        self.blocked.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()

    # -- calls --------------------------------------------------------------------------------------

    def _start(self, stream: _Stream, out: list[bytes]) -> None:
        body = b"".join(stream.body)
        stream.body = []
        try:
            message = request_message(body, self.server.limit, stream.headers.get(b"grpc-encoding"))
        except GrpcStatus as status:
            self.streams.pop(stream.id, None)
            self._refuse(stream.id, status, False, out)
            return
        stream.task = asyncio.get_running_loop().create_task(self._call(stream, message))
        self.server.calls += 1
        self.running += 1
        stream.task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self.server.calls -= 1
        self.running -= 1

    async def _call(self, stream: _Stream, message: bytes) -> None:
        try:
            deadline = timeout_of(stream.headers.get(b"grpc-timeout"))
            if deadline is None:
                reply = await stream.handler(message, stream.headers)
            else:
                scope = asyncio.timeout(deadline)
                try:
                    async with scope:
                        reply = await stream.handler(message, stream.headers)
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise GrpcStatus(DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except GrpcStatus as status:
            self._answer(stream, None, status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("gRPC call %s failed", stream.headers.get(b":path", b"").decode(errors="replace"))
            self._answer(stream, None, GrpcStatus(UNKNOWN, f"unexpected error ({type(exc).__name__})"))
        else:
            self._answer(stream, reply, None)

    def _answer(self, stream: _Stream, reply: bytes | None, status: GrpcStatus | None) -> None:
        if self.streams.get(stream.id) is not stream or self.transport is None or self.transport.is_closing():
            return  # reset by the client, or the connection is gone
        out: list[bytes] = []
        if status is not None:
            self.streams.pop(stream.id, None)
            out.append(h2.header_frames(stream.id, status_block(status), True, self.peer_max_frame))
        else:
            assert reply is not None
            out.append(h2.header_frames(stream.id, h2.GRPC_HEAD, False, self.peer_max_frame))
            stream.pending = memoryview(b"\x00" + len(reply).to_bytes(4, "big") + reply)
            self._send_pending(stream, out)
        if self.acks:
            self._take_acks(out)
        self.transport.write(b"".join(out))

    def _send_pending(self, stream: _Stream, out: list[bytes]) -> None:
        pending = stream.pending
        while pending and self.send_window > 0 and stream.window > 0:
            size = min(len(pending), self.send_window, stream.window, self.peer_max_frame)
            out.append(h2.frame(h2.DATA, 0, stream.id, bytes(pending[:size])))
            pending = pending[size:]
            self.send_window -= size
            stream.window -= size
        stream.pending = pending
        if pending:
            self.blocked[stream.id] = stream
            return
        self.blocked.pop(stream.id, None)
        self.streams.pop(stream.id, None)
        out.append(h2.frame(h2.HEADERS, h2.END_STREAM | h2.END_HEADERS, stream.id, _OK_TRAILERS))

    def _flush_blocked(self, out: list[bytes]) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._send_pending(stream, out)

    def _refuse(self, stream_id: int, status: GrpcStatus, still_sending: bool, out: list[bytes]) -> None:
        out.append(h2.header_frames(stream_id, status_block(status), True, self.peer_max_frame))
        if still_sending:  # the client need not send the rest of a request already answered
            out.append(h2.rst_stream(stream_id, h2.NO_ERROR))

    # -- ending -------------------------------------------------------------------------------------

    def _fail(self, out: list[bytes], code: int) -> None:
        out.append(h2.goaway(self.last_stream, code))
        if self.transport is not None:
            self.transport.write(b"".join(out))
            out.clear()
            self.transport.close()

    def go_away(self) -> None:
        """No new calls on this connection: the client opens its next ones elsewhere."""
        if self.going_away or self.transport is None or self.transport.is_closing():
            return
        self.going_away = True
        self.transport.write(h2.goaway(self.last_stream, h2.NO_ERROR))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
