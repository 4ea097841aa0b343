"""The gRPC server's HTTP/2, driven frame by frame: what the SDKs' clients do rarely or never, but
others may (small flow-control windows, CONTINUATION, padding, compression, resets, bad input).

The client is `h2`, a separate HTTP/2 implementation, with hand-built frames where it cannot be made
to send what a test needs.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import state_pb2
from grpc_testing import STORE, dapr_stub, refusal, write_component
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived
from h2.settings import SettingCodes
from hpack import Decoder, Encoder

from conftest import IMPLEMENTATIONS, serve_impl
from fixtures.backends import RedisServer
from fixtures.sidecar import Sidecar, sidecar_process
from fixtures.stores import ComponentUnderTest

MEMORY = ComponentUnderTest("in_memory", "state.in-memory", {})
LIMIT = 256 * 1024
BIG = b'"' + b"x" * 200_000 + b'"'
GET_STATE = "/dapr.proto.runtime.v1.Dapr/GetState"
SAVE_STATE = "/dapr.proto.runtime.v1.Dapr/SaveState"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    folder = tmp_path_factory.mktemp("wire")
    write_component(folder, STORE, MEMORY)
    args = ["--resources-path", str(folder), "--app-id", "myapp", "--max-body-size", str(LIMIT)]
    with sidecar_process(args, log=folder / "server.log") as running:
        with dapr_stub(running) as stub:
            item = common_pb2.StateItem(key="big", value=BIG)
            stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[item]))
        yield running


def grpc_body(message: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


def request_headers(path: str, **extra: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra.items(),
    ]


@dataclass
class Answer:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: int | None = None
    frames: list[int] = field(default_factory=list)  # sizes of the DATA frames

    @property
    def status(self) -> dict[bytes, bytes]:
        """grpc-status and friends: in the trailers, or in the headers of a trailers-only answer."""
        return self.trailers or self.headers

    def message(self) -> bytes:
        assert self.data[0] == 0
        (length,) = struct.unpack(">I", self.data[1:5])
        assert len(self.data) == 5 + length
        return self.data[5:]


class RawClient:
    """One HTTP/2 connection to the server through h2, the windows and frame sizes of our choosing."""

    def __init__(self, port: int, *, window: int = 65_535) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.answers: dict[int, Answer] = {}
        self.ended: set[int] = set()
        self.pings: list[bytes] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, path: str, body: bytes, **headers: str) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, request_headers(path, **headers))
        self.conn.send_data(stream, body, end_stream=True)
        self.flush()
        return stream

    def receive(self, stream: int, *, acknowledge: bool = True) -> Answer:
        """Read until `stream` ends or is reset, returning the window for what was read."""
        while stream not in self.ended:
            data = self.sock.recv(65_536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in self.conn.receive_data(data):
                answer = self.answers.setdefault(getattr(event, "stream_id", 0), Answer())
                if isinstance(event, ResponseReceived):
                    answer.headers = dict(event.headers)
                elif isinstance(event, DataReceived):
                    answer.data += event.data
                    answer.frames.append(len(event.data))
                    if acknowledge:
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, TrailersReceived):
                    answer.trailers = dict(event.headers)
                elif isinstance(event, StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, StreamReset):
                    answer.reset = event.error_code
                    self.ended.add(event.stream_id)
            self.flush()
        return self.answers[stream]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server: Sidecar) -> Iterator[RawClient]:
    client = RawClient(server.grpc_port)
    yield client
    client.close()


def get_big() -> bytes:
    return grpc_body(state_pb2.GetStateRequest(store_name=STORE, key="big").SerializeToString())


def test_a_small_window_gets_the_reply_in_window_sized_pieces(server: Sidecar) -> None:
    client = RawClient(server.grpc_port, window=1_000)
    try:
        answer = client.receive(client.call(GET_STATE, get_big()))
        assert answer.status[b"grpc-status"] == b"0"
        assert state_pb2.GetStateResponse.FromString(answer.message()).data == BIG
        assert max(answer.frames) <= 1_000  # never more than the stream's window at once
    finally:
        client.close()


def test_frames_respect_the_default_maximum_size(raw: RawClient) -> None:
    answer = raw.receive(raw.call(GET_STATE, get_big()))
    assert state_pb2.GetStateResponse.FromString(answer.message()).data == BIG
    assert max(answer.frames) <= 16_384 and len(answer.frames) > 1


def test_calls_interleave_on_one_connection(raw: RawClient) -> None:
    streams = [raw.call(GET_STATE, get_big()) for _ in range(5)]
    for stream in streams:
        assert state_pb2.GetStateResponse.FromString(raw.receive(stream).message()).data == BIG


def test_a_header_block_split_over_continuation_frames_with_padding(server: Sidecar) -> None:
    block = Encoder().encode([(k.encode(), v.encode()) for k, v in request_headers(GET_STATE)])
    first, second = block[:7], block[7:]
    body = get_big()
    frames = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        _frame(0x4, 0, 0, struct.pack(">HI", 0x4, 1 << 20)),  # SETTINGS: a window for the reply
        _frame(0x8, 0, 0, struct.pack(">I", 1 << 20)),  # WINDOW_UPDATE of the connection
        _frame(0x1, 0x8, 1, bytes([3]) + first + b"\0\0\0"),  # HEADERS, PADDED, no END_HEADERS
        _frame(0x9, 0x4, 1, second),  # CONTINUATION, END_HEADERS
        _frame(0x0, 0x1 | 0x8, 1, bytes([5]) + body + b"\0" * 5),  # DATA, END_STREAM, PADDED
    ]
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
        sock.sendall(b"".join(frames))
        data, trailers = b"", b""
        for kind, flags, stream, payload in _read_frames(sock):
            if stream == 1 and kind == 0x0:
                data += payload
            if stream == 1 and kind == 0x1 and flags & 0x1:
                trailers = payload
                break
    assert state_pb2.GetStateResponse.FromString(data[5:]).data == BIG
    assert Decoder().decode(trailers, raw=True) == [(b"grpc-status", b"0")]


def test_ping_is_answered(raw: RawClient) -> None:
    raw.send_raw(_frame(0x6, 0, 0, b"12345678"))
    seen = b""
    while b"12345678" not in seen:
        seen += raw.sock.recv(65_536)
    assert _frame(0x6, 0x1, 0, b"12345678") in seen


@pytest.mark.backends
def test_a_ping_during_a_slow_call_is_answered_before_the_call(
    redis_metadata: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A PING ACK may wait for a reply to ride with, but only briefly: with the store held for
    seconds, the ACK comes on its own, long before the reply."""
    write_component(tmp_path, STORE, ComponentUnderTest("redis", "state.redis", redis_metadata))
    with sidecar_process(["--resources-path", str(tmp_path)]) as server:
        client = RawClient(server.grpc_port)
        try:
            client.receive(client.call(GET_STATE, get_big()))  # connected, the store warm
            redis_server.command("CLIENT", "PAUSE", "3000", "ALL")  # every other client waits
            stream = client.call(GET_STATE, get_big())
            client.send_raw(_frame(0x6, 0, 0, b"slowcall"))
            reads: list[list[tuple[int, int, int, bytes]]] = []
            for read, frame in _frames_by_read(client.sock):
                while len(reads) <= read:
                    reads.append([])
                reads[read].append(frame)
                if frame[2] == stream and frame[0] == 0x1 and frame[1] & 0x1:
                    break  # the call's end
        finally:
            client.close()
    (ack_read,) = [i for i, frames in enumerate(reads) if (0x6, 0x1, 0, b"slowcall") in frames]
    answer_reads = [i for i, frames in enumerate(reads) if any(f[2] == stream for f in frames)]
    assert answer_reads and ack_read < min(answer_reads)


def test_gzip_requests_are_accepted_and_an_unknown_encoding_is_refused(
    server: Sidecar, raw: RawClient
) -> None:
    with dapr_stub(server) as stub:
        item = common_pb2.StateItem(key="zipped", value=b'"z"')
        request = state_pb2.SaveStateRequest(store_name=STORE, states=[item])
        stub.SaveState(request, compression=grpc.Compression.Gzip)
        get = state_pb2.GetStateRequest(store_name=STORE, key="zipped")
        assert stub.GetState(get, compression=grpc.Compression.Gzip).data == b'"z"'
    message = gzip.compress(get.SerializeToString())
    answer = raw.receive(raw.call(GET_STATE, grpc_body(message, compressed=True), **{"grpc-encoding": "br"}))
    assert answer.status[b"grpc-status"] == b"12"
    assert b"br" in answer.status[b"grpc-message"]


def test_a_message_over_the_limit_is_refused_without_reading_it_all(server: Sidecar, raw: RawClient) -> None:
    with dapr_stub(server) as stub:
        huge = common_pb2.StateItem(key="huge", value=b"y" * (LIMIT + 1))
        r = refusal(lambda: stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[huge])))
        assert r.code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"vs. {LIMIT})" in r.message
        assert stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="huge")).data == b""
    # Announced larger than the limit: refused on the prefix, the rest never sent.
    stream = raw.conn.get_next_available_stream_id()
    raw.conn.send_headers(stream, request_headers(SAVE_STATE))
    raw.conn.send_data(stream, struct.pack(">BI", 0, 10 * LIMIT) + b"z" * 1_000)
    raw.flush()
    answer = raw.receive(stream)
    assert answer.status[b"grpc-status"] == b"8"
    assert (
        answer.status[b"grpc-message"]
        == f"grpc: received message larger than max ({10 * LIMIT} vs. {LIMIT})".encode()
    )
    assert (
        state_pb2.GetStateResponse.FromString(raw.receive(raw.call(GET_STATE, get_big())).message()).data
        == BIG
    )


def test_malformed_requests_get_statuses(raw: RawClient) -> None:
    two = grpc_body(b"") + grpc_body(b"")
    assert raw.receive(raw.call(GET_STATE, two)).status[b"grpc-status"] == b"13"
    assert raw.receive(raw.call(GET_STATE, b"\0\0")).status[b"grpc-status"] == b"13"
    garbage = raw.receive(raw.call(GET_STATE, grpc_body(b"\xff\xff\xff")))
    assert garbage.status[b"grpc-status"] == b"13"
    assert garbage.status[b"grpc-message"].startswith(b"grpc: error unmarshalling request")
    unknown = raw.receive(raw.call("/no.Such/Method", grpc_body(b"")))
    assert unknown.status[b"grpc-status"] == b"12"


def test_not_grpc_is_415(raw: RawClient) -> None:
    stream = raw.conn.get_next_available_stream_id()
    headers = [(k, "text/plain" if k == "content-type" else v) for k, v in request_headers(GET_STATE)]
    raw.conn.send_headers(stream, headers, end_stream=True)
    raw.flush()
    assert raw.receive(stream).headers[b":status"] == b"415"


def test_a_reset_stream_leaves_the_connection_serving(raw: RawClient) -> None:
    stream = raw.conn.get_next_available_stream_id()
    raw.conn.send_headers(stream, request_headers(GET_STATE))
    raw.conn.reset_stream(stream)
    raw.flush()
    answer = raw.receive(raw.call(GET_STATE, get_big()))
    assert state_pb2.GetStateResponse.FromString(answer.message()).data == BIG


def test_not_http2_is_closed(server: Sidecar) -> None:
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        kinds = [kind for kind, _, _, _ in _read_frames(sock)]
    assert kinds[-1] == 0x7  # a GOAWAY, then the close


def test_the_server_outlives_a_misbehaving_client(server: Sidecar) -> None:
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x0, 0, 0, b"data on stream zero"))
        while sock.recv(65_536):
            pass
    with dapr_stub(server) as stub:
        assert stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="big")).data == BIG


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _frames_by_read(sock: socket.socket) -> Iterator[tuple[int, tuple[int, int, int, bytes]]]:
    """Each frame with the number of the read that completed it."""
    buffer = b""
    read = 0
    while chunk := sock.recv(65_536):
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            stream = int.from_bytes(buffer[5:9], "big")
            yield read, (buffer[3], buffer[4], stream, buffer[9 : 9 + length])
            buffer = buffer[9 + length :]
        read += 1


def _read_frames(sock: socket.socket) -> Iterator[tuple[int, int, int, bytes]]:
    return (frame for _, frame in _frames_by_read(sock))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_statuses_at_the_edges_agree_with_daprd(impl: str, tmp_path: Path) -> None:
    """Compressed requests, unknown services and methods, and garbage, as daprd's gRPC answers them."""
    with serve_impl(impl, MEMORY, tmp_path / "server") as server:
        with dapr_stub(server) as stub:
            item = common_pb2.StateItem(key="zipped", value=b'"z"')
            stub.SaveState(
                state_pb2.SaveStateRequest(store_name=STORE, states=[item]), compression=grpc.Compression.Gzip
            )
            get = state_pb2.GetStateRequest(store_name=STORE, key="zipped")
            assert stub.GetState(get, compression=grpc.Compression.Gzip).data == b'"z"'
            deflated = refusal(lambda: stub.GetState(get, compression=grpc.Compression.Deflate))
            assert (deflated.code, deflated.message) == (
                grpc.StatusCode.UNIMPLEMENTED,
                'grpc: Decompressor is not installed for grpc-encoding "deflate"',
            )
        client = RawClient(server.grpc_port)
        try:
            seen = {}
            for path in ("/no.Such/Method", "/dapr.proto.runtime.v1.Dapr/NoSuchMethod"):
                status = client.receive(client.call(path, grpc_body(b""))).status
                seen[path] = (status[b"grpc-status"], status[b"grpc-message"])
            garbage = client.receive(client.call(GET_STATE, grpc_body(b"\xff\xff\xff"))).status
        finally:
            client.close()
    if impl == "daprd":  # it proxies calls it does not serve to an app (service invocation)
        assert seen == {
            "/no.Such/Method": (b"2", b"cannot proxy request: missing dapr-app-id metadata"),
            "/dapr.proto.runtime.v1.Dapr/NoSuchMethod": (
                b"2",
                b"failed to proxy request: required metadata dapr-app-id not found",
            ),
        }
    else:  # no service invocation here: the words of daprd's gRPC library for what it does not serve
        assert seen == {
            "/no.Such/Method": (b"12", b"unknown service no.Such"),
            "/dapr.proto.runtime.v1.Dapr/NoSuchMethod": (
                b"12",
                b"unknown method NoSuchMethod for service dapr.proto.runtime.v1.Dapr",
            ),
        }
    assert garbage[b"grpc-status"] == b"13"
    assert garbage[b"grpc-message"].startswith(b"grpc: error unmarshalling request: ")


def test_a_stopping_server_sends_goaway_before_closing(tmp_path: Path) -> None:
    """Clients learn to open their next calls elsewhere: GOAWAY naming the last stream served."""
    write_component(tmp_path, STORE, MEMORY)
    with sidecar_process(["--resources-path", str(tmp_path)]) as server:
        assert server.pid is not None
        client = RawClient(server.grpc_port)
        try:
            served = client.call(GET_STATE, get_big())
            client.receive(served)
            os.kill(server.pid, signal.SIGTERM)
            frames = list(_read_frames(client.sock))
        finally:
            client.close()
    goaways = [payload for kind, _, stream, payload in frames if kind == 0x7 and stream == 0]
    assert goaways, [kind for kind, _, _, _ in frames]
    last_stream, code = struct.unpack(">II", goaways[0][:8])
    assert (last_stream, code) == (served, 0)  # NO_ERROR
