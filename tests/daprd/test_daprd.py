"""The lean daprd of `make daprd`, started by testing/statestore_testing/daprd.py, serves the state API as the
reference: its components, version, and the ETag round trip over HTTP on in-memory, SQLite and Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends


def round_trip(url: str, store: str, first_write_without_etag: int = 409) -> None:
    """Save, read, update with the ETag; a stale ETag is refused with 409 and changes nothing."""
    state = f"{url}/v1.0/state/{store}"
    key = f"k-{uuid.uuid4().hex}"
    assert httpx.post(state, json=[{"key": key, "value": {"n": 1}}]).status_code == 204
    first = httpx.get(f"{state}/{key}")
    assert first.status_code == 200 and first.json() == {"n": 1}
    etag = first.headers["etag"]
    assert httpx.post(state, json=[{"key": key, "value": {"n": 2}, "etag": etag}]).status_code == 204
    second = httpx.get(f"{state}/{key}")
    assert second.json() == {"n": 2} and second.headers["etag"] != etag

    stale = httpx.post(state, json=[{"key": key, "value": {"n": 3}, "etag": etag}])
    assert stale.status_code == 409
    assert stale.json()["errorCode"] == "ERR_STATE_SAVE"
    assert "possible etag mismatch" in stale.json()["message"]
    first_write = httpx.post(
        state, json=[{"key": key, "value": {"n": 4}, "options": {"concurrency": "first-write"}}]
    )
    assert first_write.status_code == first_write_without_etag
    refused = httpx.delete(f"{state}/{key}", headers={"If-Match": etag})
    assert refused.status_code == 409 and refused.json()["errorCode"] == "ERR_STATE_DELETE"
    current = httpx.get(f"{state}/{key}")
    assert current.json() == ({"n": 2} if first_write_without_etag == 409 else {"n": 4})

    assert httpx.delete(f"{state}/{key}", headers={"If-Match": current.headers["etag"]}).status_code == 204
    gone = httpx.get(f"{state}/{key}")
    assert gone.status_code == 204 and gone.content == b""


def test_in_memory_and_sqlite(tmp_path: Path) -> None:
    components = [
        DaprComponent("memory", "state.in-memory"),
        DaprComponent("sqlite", "state.sqlite", {"connectionString": str(tmp_path / "state.db")}),
    ]
    with Daprd(components, tmp_path) as daprd:
        for store in ("memory", "sqlite"):
            round_trip(daprd.http_url, store)
            # UUID ETags: any other string is a mismatch, not an invalid ETag.
            key = f"k-{uuid.uuid4().hex}"
            assert (
                httpx.post(
                    f"{daprd.http_url}/v1.0/state/{store}", json=[{"key": key, "value": 1}]
                ).status_code
                == 204
            )
            wrong = httpx.post(
                f"{daprd.http_url}/v1.0/state/{store}", json=[{"key": key, "value": 2, "etag": "bad-etag"}]
            )
            assert wrong.status_code == 409
        metadata = httpx.get(f"{daprd.http_url}/v1.0/metadata").json()
    assert metadata["runtimeVersion"] == "1.14.0"
    assert {(c["name"], c["type"], c["version"]) for c in metadata["components"]} == {
        ("memory", "state.in-memory", "v1"),
        ("sqlite", "state.sqlite", "v1"),
    }


def test_redis(tmp_path: Path, redis_metadata: dict[str, str]) -> None:
    with Daprd([DaprComponent("redis", "state.redis", redis_metadata)], tmp_path) as daprd:
        # Redis quirk: first-write without an ETag overwrites a key that was not written first-write.
        round_trip(daprd.http_url, "redis", first_write_without_etag=204)
        # Redis ETags are integers: one that is not is invalid (400), not a mismatch.
        key = f"k-{uuid.uuid4().hex}"
        state = f"{daprd.http_url}/v1.0/state/redis"
        assert httpx.post(state, json=[{"key": key, "value": 1}]).status_code == 204
        assert httpx.get(f"{state}/{key}").headers["etag"] == "1"
        invalid = httpx.post(state, json=[{"key": key, "value": 2, "etag": "not-a-number"}])
        assert invalid.status_code == 400 and invalid.json()["errorCode"] == "ERR_STATE_SAVE"


def test_only_the_registered_components_start(tmp_path: Path) -> None:
    """A type the lean build does not register is fatal, as in any daprd."""
    with pytest.raises(RuntimeError, match=r"state\.mongodb"):
        Daprd([DaprComponent("mongo", "state.mongodb", {"host": "127.0.0.1:1"})], tmp_path).start()


def test_unknown_store_and_stop(tmp_path: Path) -> None:
    daprd = Daprd([DaprComponent("memory", "state.in-memory")], tmp_path)
    with daprd:
        missing = httpx.get(f"{daprd.http_url}/v1.0/state/nope/k")
        assert missing.status_code == 400 and missing.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{daprd.http_url}/v1.0/healthz")
