"""An unexpected failure inside a store call is answered with Dapr's error for the operation and the
message `internal error (<type>)`: never a traceback, a driver's text or a hang (docs/security.md)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis

from fixtures.backends import RedisServer
from fixtures.stores import ComponentUnderTest

if TYPE_CHECKING:
    from conftest import MakeApi

pytestmark = pytest.mark.backends


async def test_a_row_written_by_another_client_that_cannot_be_read_is_an_internal_error(
    redis_server: RedisServer, redis_metadata: dict[str, str], make_api: MakeApi
) -> None:
    api = await make_api({"store": ComponentUnderTest("redis", "state.redis", redis_metadata)})
    key = uuid.uuid4().hex
    # Another client stores a hash of the store's layout whose version is not UTF-8 text.
    client = redis.Redis(host=redis_server.host, port=redis_server.port, password=redis_server.password)
    client.hset(f"myapp||{key}", mapping={"data": b'"v"', "version": b"soon\xff"})
    client.close()
    r = await api.get(f"/v1.0/state/store/{key}")
    assert r.status_code == 500
    body = r.json()
    assert body["errorCode"] == "ERR_STATE_GET"
    assert body["message"] == f"fail to get {key} from state store store: internal error (UnicodeDecodeError)"
    assert "Traceback" not in r.text and "soon" not in r.text
    # The server keeps serving the other keys.
    assert (await api.post("/v1.0/state/store", json=[{"key": f"{key}-ok", "value": 1}])).status_code == 204
    assert (await api.get(f"/v1.0/state/store/{key}-ok")).json() == 1
