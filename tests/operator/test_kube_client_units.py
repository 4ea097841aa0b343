"""The operator's API client against a local socket: an API server that never answers is an ApiError
that names the request, not an exception without a message."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from statestore_operator.kube import ApiError, Client


async def test_no_answer_within_the_timeout_names_the_request() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"), timeout=0.5)
    try:
        with pytest.raises(ApiError) as caught:
            await client.get("Service", "ns", "statestore-a")
        assert caught.value.status == 504
        assert str(caught.value) == (
            "HTTP 504: no answer from the API server to GET /api/v1/namespaces/ns/services/statestore-a"
            " within 0.5 s"
        )
        assert accepted  # the request did reach the server
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
