"""Where daprd 1.14's Redis store contradicts Dapr's documented state API, we keep the documented
behaviour (docs/state-api.md, "Where we deliberately differ from daprd"). Each test runs the same
requests against a real daprd and against our server, on the same Redis, and asserts both answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures.backends import RedisServer
from fixtures.sidecar import sidecar
from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends

STORE = "store"


@pytest.fixture(scope="module")
def component(redis_server: RedisServer) -> DaprComponent:
    return DaprComponent(
        STORE, "state.redis", {"redisHost": redis_server.address, "redisPassword": redis_server.password}
    )


@pytest.fixture(scope="module")
def daprd_url(component: DaprComponent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Daprd([component], tmp_path_factory.mktemp("daprd"), app_id="differences") as server:
        yield f"{server.http_url}/v1.0/state/{STORE}"


@pytest.fixture(scope="module")
def ours_url(component: DaprComponent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    resources: Path = tmp_path_factory.mktemp("ours")
    (resources / f"{STORE}.yaml").write_text(component.manifest())
    with sidecar(["--resources-path", str(resources), "--app-id", "differences"]) as url:
        yield f"{url}/v1.0/state/{STORE}"


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def test_an_etag_on_a_missing_key_is_a_mismatch(daprd_url: str, ours_url: str) -> None:
    """Dapr: a write with an ETag succeeds only if the item carries it; a missing item carries none."""
    for url, expected in ((daprd_url, 204), (ours_url, 409)):
        k = key()
        r = httpx.post(url, json=[{"key": k, "value": 1, "etag": "5"}])
        assert r.status_code == expected, (url, r.text)
        assert httpx.get(f"{url}/{k}").status_code == (200 if expected == 204 else 204)


def test_a_first_write_save_does_not_break_later_saves(daprd_url: str, ours_url: str) -> None:
    """Dapr: a save without an ETag under last-write concurrency always succeeds. daprd's first-write
    save leaves a `first-write` flag in the hash that makes every later plain save of the key fail."""
    for url, expected in ((daprd_url, 500), (ours_url, 204)):
        k = key()
        first = {"key": k, "value": 1, "options": {"concurrency": "first-write"}}
        assert httpx.post(url, json=[first]).status_code == 204
        r = httpx.post(url, json=[{"key": k, "value": 2}])
        assert r.status_code == expected, (url, r.text)
        assert httpx.get(f"{url}/{k}").json() == (1 if expected == 500 else 2)


def test_a_failed_transaction_writes_nothing(daprd_url: str, ours_url: str) -> None:
    """Dapr: a transaction is applied all or none. daprd's Redis store runs each operation's script in
    MULTI/EXEC, which does not roll back: the operations before the refused one stay written."""
    for url, partial in ((daprd_url, True), (ours_url, False)):
        a, b = key(), key()
        assert httpx.post(url, json=[{"key": b, "value": "b"}]).status_code == 204
        tx = {
            "operations": [
                {"operation": "upsert", "request": {"key": a, "value": "a"}},
                {"operation": "upsert", "request": {"key": b, "value": "b2", "etag": "999"}},
            ]
        }
        r = httpx.post(f"{url}/transaction", json=tx)
        assert r.status_code >= 400, (url, r.text)
        assert httpx.get(f"{url}/{a}").status_code == (200 if partial else 204), url
        assert httpx.get(f"{url}/{b}").json() == "b"
