"""HTTP/2 frames and header blocks as the gRPC server writes them (RFC 9113, RFC 7541).

The server never adds to the HPACK dynamic table: every header it sends is a static-table index or a
literal "without indexing", so the blocks are plain bytes, many of them built once. Request headers
are decoded with `hpack`, which keeps the client's dynamic table.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9

# Flags.
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Settings.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# Error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

_HEAD = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")
_SETTING = struct.Struct(">HI")


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack((len(payload) << 8) | kind, flags, stream) + payload


def settings(values: Iterable[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload) - len(payload) % 6, 6)]


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream, code))


def u32(payload: bytes) -> int:
    value: int = _U32.unpack_from(payload)[0]
    return value & 0x7FFF_FFFF


def header_frames(stream: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """A header block as one HEADERS frame, and CONTINUATION frames where it exceeds `max_frame`."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream, block)
    chunks = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream, chunks[0])]
    out += [frame(CONTINUATION, 0, stream, chunk) for chunk in chunks[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream, chunks[-1]))
    return b"".join(out)


def data_frames(stream: int, data: bytes, max_frame: int) -> list[bytes]:
    """`data` as DATA frames of at most `max_frame` bytes each (none carries END_STREAM)."""
    if len(data) <= max_frame:
        return [frame(DATA, 0, stream, data)]
    return [frame(DATA, 0, stream, data[i : i + max_frame]) for i in range(0, len(data), max_frame)]


# -- HPACK, sending side --------------------------------------------------------------------------------


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: `value` with an N-bit prefix, `first` holding the bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as "literal without indexing, new name", strings not Huffman-coded."""
    return b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


def literal_indexed_name(index: int, value: bytes) -> bytes:
    """A header field as "literal without indexing" whose name is static-table entry `index`."""
    return _integer(index, 4, 0) + _integer(len(value), 7, 0) + value


STATUS_200 = b"\x88"  # static table entry 8, ":status: 200"
_CONTENT_TYPE = 31  # static table entry "content-type"
# No grpc-accept-encoding, as daprd sends none: clients then compress as they would towards daprd.
GRPC_HEAD = STATUS_200 + literal_indexed_name(_CONTENT_TYPE, b"application/grpc")
