"""Helpers of the hostile-input tests: the state API in-process (ASGI) on its own event loop thread, and the oracle
every response is judged by.

Hypothesis drives synchronous test functions; each request runs on a private event loop in a
background thread with a hard per-request timeout, so a hang fails the example instead of the run.

`FUZZ_EXAMPLES` sets the number of examples per fuzz test and backend (default: a small number that
keeps the whole folder within about a minute); for a long run, e.g. `FUZZ_EXAMPLES=20000`.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import httpx
import orjson

from fixtures.stores import SERVER_BACKENDS, ComponentUnderTest
from statestore_sidecar.app import create_app
from statestore_sidecar.components import Component, MetadataItem, validate
from statestore_sidecar.runtime import Runtime, Settings

APP_ID = "myapp"
STORE = "store"
REQUEST_TIMEOUT = float(os.environ.get("FUZZ_REQUEST_TIMEOUT", "20"))

T = TypeVar("T")


def examples(default: int, backend: str = "in_memory") -> int:
    """Examples per fuzz test: FUZZ_EXAMPLES if set, else `default` (a third on server backends)."""
    configured = os.environ.get("FUZZ_EXAMPLES")
    if configured:
        return int(configured)
    return max(10, default // 3) if backend in SERVER_BACKENDS else default


class LoopThread:
    """An event loop in a daemon thread; `run` waits for a coroutine with a timeout."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = REQUEST_TIMEOUT) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"no answer within {timeout}s (the server hangs)") from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def runtime_for(stores: Mapping[str, ComponentUnderTest], **settings: Any) -> Runtime:
    validated = []
    for name, cut in stores.items():
        component = Component(
            name=name, type=cut.type, metadata=tuple(MetadataItem(k, v) for k, v in cut.metadata.items())
        )
        validated.append(validate(component, cut.metadata))
    return Runtime.build(Settings(**{"app_id": APP_ID, **settings}), validated)


class Api:
    """A synchronous face of the in-process API: `request` returns a fully read httpx.Response."""

    def __init__(self, stores: Mapping[str, ComponentUnderTest], **settings: Any) -> None:
        self.components = dict(stores)
        self.runner = LoopThread()
        self.runtime = runtime_for(stores, **settings)
        self.client: httpx.AsyncClient = self.runner.run(self._open(), 60)

    async def _open(self) -> httpx.AsyncClient:
        await self.runtime.start()
        for handle in self.runtime.stores.values():
            await asyncio.wait_for(handle.ready.wait(), 30)
        # raise_app_exceptions=False: an unhandled exception becomes the 500 a real server sends.
        transport = httpx.ASGITransport(app=create_app(self.runtime), raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://state", timeout=REQUEST_TIMEOUT)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, **kwargs))

    def close(self) -> None:
        async def shutdown() -> None:
            await self.client.aclose()
            await self.runtime.stop()

        try:
            self.runner.run(shutdown(), 30)
        finally:
            self.runner.stop()


# --- the oracle -----------------------------------------------------------------------------

# The 500s Dapr documents for the inputs a client controls (reference §2, §5, §6, §8.2): which
# errorCode each route may answer with, and what the message must then be about. Anything else
# with status 5xx is a bug: the server failed on input it should have refused or handled.
_OPTION_ERROR = r"unrecognized (concurrency|consistency) model|ttlInSeconds"
# A backend that cannot hold a key says so (PostgreSQL: NUL characters, index size; MySQL: 2048 bytes).
_KEY_REFUSED = r"cannot store keys containing NUL|key is too long|Data too long for column 'id'"
DOCUMENTED_500: dict[str, list[tuple[str, str]]] = {
    # bad ttlInSeconds / concurrency / consistency values are store errors (500 ERR_STATE_SAVE)
    "save": [("ERR_STATE_SAVE", _OPTION_ERROR + "|" + _KEY_REFUSED)],
    # consistency is forwarded to the store, which refuses an unknown value
    "get": [("ERR_STATE_GET", r"unrecognized consistency model")],
    "delete": [("ERR_STATE_DELETE", r"unrecognized (concurrency|consistency) model")],
    # any failure of the transaction, etag mismatches included, is 500 ERR_STATE_TRANSACTION
    "transaction": [
        (
            "ERR_STATE_TRANSACTION",
            _OPTION_ERROR + "|" + _KEY_REFUSED + r"|etag mismatch|already exists and first-write",
        ),
        ("ERR_STATE_STORE_NOT_SUPPORTED", r"doesn't support transactions"),
    ],
    # bad queries, and stores that cannot run a valid one, are 500 ERR_STATE_QUERY
    "query": [
        ("ERR_STATE_QUERY", r"query failed: "),
        ("ERR_STATE_STORE_NOT_SUPPORTED", r"does not support querying"),
    ],
    "bulk": [],
    "healthz": [("ERR_HEALTH_APPID_NOT_MATCH", r"app-id does not match")],
    "outbound": [],
    "metadata": [],
    "set_metadata": [],
    "livez": [],
    "other": [],
}
# Markers of a failure the server did not anticipate (app._unexpected) or of leaked internals.
_LEAKS = re.compile(r"internal error \(|Traceback|File \"/|asyncpg\.|aiomysql|pymysql|sqlite3\.")


def check(route: str, response: httpx.Response) -> None:
    """Assert one response is acceptable for any input: no undocumented 5xx, Dapr's error shape."""
    status = response.status_code
    ctype = response.headers.get("content-type", "")
    text = response.content.decode("utf-8", "replace")
    where = f"{response.request.method} {str(response.request.url)[:200]} -> {status} {text[:500]!r}"
    assert status != 401, where  # no token is configured in these tests
    assert not _LEAKS.search(text), f"internals leaked: {where}"
    if response.request.method == "HEAD":
        assert status < 500, where  # HEAD answers carry no body to check
        return
    if status < 400:
        if status == 204:
            assert response.content == b"", where
        elif route != "set_metadata":
            # Every 200 of the state API is JSON (GET returns stored JSON values as they were saved).
            orjson.loads(response.content)
        return
    if ctype.startswith("text/plain"):
        # daprd's plain-text answers: a bad percent escape in the path, and chi's 404.
        assert (status == 400 and text.startswith("invalid URL escape")) or (
            status == 404 and text == "404 page not found\n"
        ), where
        return
    if status == 405:
        assert response.content == b"", where  # chi's 405 has no body
        return
    assert ctype == "application/json", where
    body = orjson.loads(response.content)
    assert isinstance(body, dict), where
    assert isinstance(body.get("errorCode"), str) and body["errorCode"].startswith("ERR_"), where
    assert isinstance(body.get("message"), str), where
    if status >= 500:
        allowed = DOCUMENTED_500[route]
        assert status == 500, where
        assert any(
            body["errorCode"] == code and re.search(pattern, body["message"]) for code, pattern in allowed
        ), f"undocumented 500: {where}"


def healthy(api: Api) -> None:
    """The server still answers after whatever came before."""
    r = api.request("GET", "/v1.0/healthz")
    assert r.status_code == 204, r.text
