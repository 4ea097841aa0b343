"""A burst of concurrent gRPC calls: every call is served, none is dropped by the server."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from grpc_testing import STORE, serve

from fixtures.sidecar import Sidecar
from fixtures.stores import ComponentUnderTest

MEMORY = ComponentUnderTest("in_memory", "state.in-memory", {})
CHANNELS = 16
# Past 3,000 calls waiting to be taken up, gRPC core's default drops every further one.
CALLS = 5_000
CALL_TIMEOUT_SECONDS = 240.0  # generous: a loaded 2-core machine; the count is what is asserted


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sidecar]:
    with serve(MEMORY, tmp_path / "server") as running:
        yield running


async def _burst(address: str) -> collections.Counter[str]:
    # One subchannel per channel, so the burst is spread over 16 HTTP/2 connections.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    stubs = [dapr_pb2_grpc.DaprStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
    try:
        await stubs[0].SaveState(
            state_pb2.SaveStateRequest(
                store_name=STORE, states=[common_pb2.StateItem(key="burst", value=b'"v"')]
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

        async def get(i: int) -> str:
            request = state_pb2.GetStateRequest(store_name=STORE, key="burst")
            try:
                reply = await stubs[i % CHANNELS].GetState(request, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK" if reply.data == b'"v"' else f"wrong data {reply.data!r}"

        return collections.Counter(await asyncio.gather(*(get(i) for i in range(CALLS))))
    finally:
        for channel in channels:
            await channel.close()


def test_every_call_of_a_burst_is_served(server: Sidecar) -> None:
    outcomes = asyncio.run(_burst(server.grpc_address))
    assert outcomes == collections.Counter({"OK": CALLS})
