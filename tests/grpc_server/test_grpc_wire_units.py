"""The gRPC server's pure parts: deadlines, request messages, statuses and header blocks."""

from __future__ import annotations

import base64
import gzip
import struct

import pytest
from hpack import Decoder, HPACKError

from statestore_sidecar import http2_frames as h2
from statestore_sidecar.grpc_calls import GrpcStatus, request_message, status_block, timeout_of
from statestore_sidecar.header_blocks import HeaderBlocks


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"5S", 5.0),
        (b"250m", 0.25),
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"7u", 7e-6),
        (b"99999999n", 0.099999999),
    ],
)
def test_deadlines(value: bytes, seconds: float) -> None:
    assert timeout_of(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, b"", b"S", b"5", b"5s", b"123456789S", b"-1S", b"1.5S"])
def test_no_deadline_from_anything_else(value: bytes | None) -> None:
    assert timeout_of(value) is None


def body(message: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(message)) + message


def refusal(data: bytes, encoding: bytes | None = None, limit: int = 100) -> tuple[int, str]:
    with pytest.raises(GrpcStatus) as caught:
        request_message(data, limit, encoding)
    return caught.value.code, caught.value.message


def test_request_messages() -> None:
    assert request_message(body(b"abc"), 100, None) == b"abc"
    assert request_message(body(b""), 100, b"identity") == b""
    assert request_message(body(gzip.compress(b"abc"), 1), 100, b"gzip") == b"abc"
    assert refusal(b"\0\0") == (13, "grpc: the request carries no message")
    assert refusal(body(b"x" * 101)) == (8, "grpc: received message larger than max (101 vs. 100)")
    assert refusal(body(b"a") + body(b"b"))[0] == 13
    assert refusal(body(b"a", 2))[0] == 13
    assert refusal(body(b"a", 1)) == (13, "grpc: compressed flag set with identity or empty encoding")
    assert refusal(body(b"a"), b"snappy") == (
        12,
        'grpc: Decompressor is not installed for grpc-encoding "snappy"',
    )
    assert refusal(body(b"not gzip", 1), b"gzip")[0] == 13


def test_a_compressed_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    code, message = refusal(body(bomb, 1), b"gzip", limit=len(bomb))
    assert (code, message) == (
        8,
        f"grpc: received message after decompression larger than max ({len(bomb) + 1} vs. {len(bomb)})",
    )


def test_status_blocks_decode_to_grpc_trailers() -> None:
    details = b"\x08\x03\x12\x04oops"
    block = status_block(GrpcStatus(3, "bad key 'k\u00e9y' at 100%\n", details))
    headers = dict(Decoder().decode(block, raw=True))
    assert headers[b":status"] == b"200" and headers[b"content-type"] == b"application/grpc"
    assert headers[b"grpc-status"] == b"3"
    assert headers[b"grpc-message"] == b"bad key 'k%C3%A9y' at 100%25%0A"  # percent-encoded, as gRPC's spec
    padded = headers[b"grpc-status-details-bin"] + b"=" * (-len(headers[b"grpc-status-details-bin"]) % 4)
    assert base64.b64decode(padded) == details
    assert b"grpc-message" not in dict(Decoder().decode(status_block(GrpcStatus(5, "")), raw=True))


def test_long_header_values_use_multibyte_lengths() -> None:
    block = status_block(GrpcStatus(13, "x" * 70_000))
    assert (
        dict(Decoder(max_header_list_size=1 << 20).decode(block, raw=True))[b"grpc-message"] == b"x" * 70_000
    )


def test_large_header_blocks_continue_over_frames() -> None:
    block = bytes(range(256)) * 100  # 25,600 bytes
    frames = h2.header_frames(3, block, True, 10_000)
    kinds = []
    payload = b""
    position = 0
    while position < len(frames):
        length = int.from_bytes(frames[position : position + 3], "big")
        kinds.append((frames[position + 3], frames[position + 4]))
        payload += frames[position + 9 : position + 9 + length]
        position += 9 + length
    assert payload == block
    assert kinds == [(h2.HEADERS, h2.END_STREAM), (h2.CONTINUATION, 0), (h2.CONTINUATION, h2.END_HEADERS)]


def _indexed_new(name: bytes, value: bytes) -> bytes:
    """A literal header field with incremental indexing and a new name (RFC 7541, 6.2.1), no Huffman."""
    return b"\x40" + bytes([len(name)]) + name + bytes([len(value)]) + value


def test_header_blocks_are_remembered_only_while_the_table_stands_still() -> None:
    blocks = HeaderBlocks(1 << 16)
    first = b"\x83" + _indexed_new(b"x-app", b"one")  # :method POST, and x-app: one into the table
    assert blocks.decode(first) == {b":method": b"POST", b"x-app": b"one"}
    assert blocks.known == {}  # it changed the table
    again = b"\x83\xbe"  # :method POST, then dynamic entry 62
    assert blocks.decode(again) == {b":method": b"POST", b"x-app": b"one"}
    assert blocks.decode(again) is blocks.decode(again)  # remembered
    # A second literal with indexing shifts entry 62 to the new header: the same bytes mean more.
    assert blocks.decode(_indexed_new(b"x-app", b"two")) == {b"x-app": b"two"}
    assert blocks.decode(again) == {b":method": b"POST", b"x-app": b"two"}
    # A size update to 0 empties the table: entry 62 no longer exists.
    assert blocks.decode(b"\x20\x83") == {b":method": b"POST"}
    with pytest.raises(HPACKError):
        blocks.decode(again)


def test_header_blocks_without_indexing_are_remembered_up_to_a_limit() -> None:
    blocks = HeaderBlocks(1 << 16)
    for n in range(100):  # a literal without indexing (6.2.2), as a per-call deadline is sent
        timeout = f"{n}m".encode()
        block = b"\x83\x00\x0cgrpc-timeout" + bytes([len(timeout)]) + timeout
        assert blocks.decode(block) == {b":method": b"POST", b"grpc-timeout": timeout}
    assert len(blocks.known) == 64
