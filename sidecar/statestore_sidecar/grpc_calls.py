"""gRPC's call layer over HTTP/2, as pure functions: statuses and their trailers, deadlines, and the
one message of a unary request (length prefix, gzip). `grpc_wire` applies them on each stream.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from . import http2_frames as h2

# gRPC status codes (the numbers of grpc.StatusCode).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 8, 12, 13, 14, 16

_TIMEOUT_UNITS = {72: 3600.0, 77: 60.0, 83: 1.0, 109: 1e-3, 117: 1e-6, 110: 1e-9}  # H M S m u n

Headers = dict[bytes, bytes]
Handler = Callable[[bytes, Headers], Awaitable[bytes]]


class GrpcStatus(Exception):
    """Ends a call with a status other than OK; `details` is a serialized `google.rpc.Status`."""

    def __init__(self, code: int, message: str, details: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class Router(Protocol):
    def route(self, path: bytes, headers: Headers) -> Handler:
        """The handler of a call, or GrpcStatus to refuse it before its message arrives."""
        ...


def _percent_encoded(message: str) -> bytes:
    raw = message.encode()
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in raw):
        return raw
    return b"".join(bytes([c]) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in raw)


def status_block(status: GrpcStatus) -> bytes:
    """A trailers-only response: the response headers and the status in one header block."""
    block = h2.GRPC_HEAD + h2.literal(b"grpc-status", str(status.code).encode())
    if status.message:
        block += h2.literal(b"grpc-message", _percent_encoded(status.message))
    if status.details:
        block += h2.literal(b"grpc-status-details-bin", base64.b64encode(status.details).rstrip(b"="))
    return block


def timeout_of(value: bytes | None) -> float | None:
    """`grpc-timeout` in seconds: up to 8 digits and a unit; anything else is no deadline."""
    if not value or len(value) > 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


def request_message(body: bytes, limit: int, encoding: bytes | None) -> bytes:
    """The one message of a unary request body (5-byte prefix, then the message)."""
    if encoding not in (None, b"identity", b"gzip"):  # gzip: daprd's only decompressor too
        name = encoding.decode(errors="replace")
        raise GrpcStatus(UNIMPLEMENTED, f'grpc: Decompressor is not installed for grpc-encoding "{name}"')
    if len(body) < 5:
        raise GrpcStatus(INTERNAL, "grpc: the request carries no message")
    length = int.from_bytes(body[1:5], "big")
    if length > limit:
        raise GrpcStatus(RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({length} vs. {limit})")
    if len(body) != 5 + length:
        raise GrpcStatus(INTERNAL, "grpc: a unary call takes exactly one request message")
    if body[0] == 0:
        return body[5:]
    if body[0] != 1:
        raise GrpcStatus(INTERNAL, f"grpc: invalid message compression flag {body[0]}")
    if encoding != b"gzip":
        raise GrpcStatus(INTERNAL, "grpc: compressed flag set with identity or empty encoding")
    inflater = zlib.decompressobj(31)
    try:
        message = inflater.decompress(body[5:], limit + 1)
    except zlib.error as exc:
        raise GrpcStatus(INTERNAL, f"grpc: failed to decompress the message: {exc}") from None
    if len(message) > limit:
        words = f"grpc: received message after decompression larger than max ({len(message)} vs. {limit})"
        raise GrpcStatus(RESOURCE_EXHAUSTED, words)
    return message
