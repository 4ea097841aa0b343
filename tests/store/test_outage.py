"""Backend outages under load: each real server is crashed (SIGKILL) or frozen (SIGSTOP) and
brought back, while the same store object keeps being used.

* calls during the outage fail fast with BackendUnavailable, within the configured timeout;
* `ping` fails during the outage and succeeds afterwards;
* calls succeed afterwards with the same store object (the pools reconnect by themselves);
* no write acknowledged before the crash is lost (Redis runs with appendonly + appendfsync always).

Every test starts its own server instance, so the shared session servers are never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from fixtures.backends import MariaDBServer, PostgresServer, RedisServer, Server, unique_name
from fixtures.sidecar import sidecar
from statestore_sidecar.components import secret_env_var
from statestore_sidecar.schema import resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import BackendUnavailable, DeleteRequest, SetRequest, Store, StoreError

pytestmark = pytest.mark.backends

TIMEOUT = 2.0  # the configured per-call timeout of every store below
# How long a call may take to fail during an outage: generous for a loaded 2-core machine, and still
# far below a hang or a driver's default timeouts (30 s and more). The measured figures are printed.
FAIL_WITHIN = 5 * TIMEOUT


async def until(what: str, done: Callable[[], bool], seconds: float = 60) -> float:
    """Wait until `done()` (polling); return the time it took, fail naming `what` after `seconds`."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < seconds, f"timed out after {seconds:g}s waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def redis_metadata(server: Server) -> dict[str, str]:
    return {
        "redisHost": server.address,
        "redisPassword": server.password,
        "dialTimeout": "1s",
        "readTimeout": "1s",
        "redisMaxRetries": "1",
    }


def postgresql_metadata(server: Server) -> dict[str, str]:
    assert isinstance(server, PostgresServer)
    return {
        "connectionString": server.connection_string(),
        "tableName": unique_name("state"),
        "timeout": "2s",
    }


def mysql_metadata(server: Server) -> dict[str, str]:
    assert isinstance(server, MariaDBServer)
    return {"connectionString": server.dsn(), "tableName": unique_name("state"), "timeoutInSeconds": "2"}


BACKENDS: dict[str, tuple[type[Server], str, Callable[[Server], dict[str, str]]]] = {
    "redis": (RedisServer, "state.redis", redis_metadata),
    "postgresql": (PostgresServer, "state.postgresql", postgresql_metadata),
    "mysql": (MariaDBServer, "state.mysql", mysql_metadata),
}


@dataclass
class Backend:
    server: Server
    store: Store


@pytest.fixture(params=list(BACKENDS))
def own_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Server]]:
    server_type, _, _ = BACKENDS[request.param]
    server = server_type()
    try:
        server.start()
        yield request.param, server
    finally:
        server.destroy()


@pytest.fixture
async def backend(own_server: tuple[str, Server]) -> AsyncIterator[Backend]:
    name, server = own_server
    _, store_type, metadata = BACKENDS[name]
    config = StoreConfig(f"outage-{name}", resolve(schema_for(store_type), metadata(server)))
    store = create_store(store_type, config)
    await store.init()
    try:
        yield Backend(server, store)
    finally:
        await store.close()


@dataclass
class Load:
    """Writers that record which writes were acknowledged, and how long failures took."""

    store: Store
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    failures: list[tuple[float, BaseException]] = field(default_factory=list)
    successes_after: dict[float, int] = field(default_factory=dict)
    running: bool = True
    mark: float = 0.0  # successes are counted from this time on

    async def writer(self, n: int) -> None:
        i = 0
        while self.running:
            i += 1
            key = f"w{n}-{i}"
            # In jsonb's own form, so it reads back byte for byte from PostgreSQL's jsonb too.
            value = f'{{"i": {i}, "writer": {n}}}'.encode()
            started = time.monotonic()
            try:
                if i % 5 == 0:  # some transactions too: two keys, both or none
                    await self.store.transact([SetRequest(key, value), SetRequest(key + "-pair", value)])
                    self.acknowledged[key + "-pair"] = value
                else:
                    await self.store.set(SetRequest(key, value))
                self.acknowledged[key] = value
                if self.mark:
                    self.successes_after[self.mark] = self.successes_after.get(self.mark, 0) + 1
            except StoreError as exc:
                self.failures.append((time.monotonic() - started, exc))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0)


async def wait_until_ping(store: Store, seconds: float) -> float:
    started = time.monotonic()
    while True:
        try:
            await store.ping()
            return time.monotonic() - started
        except BackendUnavailable:
            if time.monotonic() - started > seconds:
                raise
            await asyncio.sleep(0.1)


async def check_fails_fast(store: Store) -> None:
    for call in (
        lambda: store.get("some-key"),
        lambda: store.bulk_get(["a", "b"]),
        lambda: store.set(SetRequest("some-key", b"1")),
        lambda: store.delete(DeleteRequest("some-key")),
        lambda: store.transact([SetRequest("a", b"1"), DeleteRequest("b")]),
        store.ping,
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await call()
        took = time.monotonic() - started
        print(f"failed after {took:.2f}s: {call}")
        assert took < FAIL_WITHIN, f"{call} took {took:.2f}s"


async def test_crash_under_load_loses_no_acknowledged_write(backend: Backend) -> None:
    store, server = backend.store, backend.server
    load = Load(store)
    writers = [asyncio.create_task(load.writer(n)) for n in range(8)]
    try:
        await until("20 acknowledged writes", lambda: len(load.acknowledged) >= 20)
        assert not load.failures
        await asyncio.to_thread(server.stop, True)  # SIGKILL: a crash, not a clean shutdown
        crashed_with = dict(load.acknowledged)

        await check_fails_fast(store)
        await until("writes to fail with the server down", lambda: bool(load.failures))
        assert all(isinstance(exc, BackendUnavailable) for _, exc in load.failures), load.failures[:3]
        slowest = max(took for took, _ in load.failures)
        print(f"{len(load.failures)} writes failed during the outage, the slowest after {slowest:.2f}s")
        assert slowest < FAIL_WITHIN, f"a failing write took {slowest:.2f}s"

        await asyncio.to_thread(server.start)
        print(f"ping answered {await wait_until_ping(store, 60):.2f}s after the restart")
        # Writes resume with the same store object (a pooled connection may fail once on the way)...
        load.mark = time.monotonic()
        await until("20 writes after the restart", lambda: load.successes_after.get(load.mark, 0) >= 20)
        # ...and then keep succeeding: the next 20 writes have no failure among them.
        load.mark = time.monotonic()
        failures_before = len(load.failures)
        await until("20 more writes", lambda: load.successes_after.get(load.mark, 0) >= 20)
        assert len(load.failures) == failures_before, load.failures[failures_before:][:3]
    finally:
        load.running = False
        await asyncio.gather(*writers, return_exceptions=True)

    # Everything acknowledged before the crash survived it, byte for byte.
    keys = list(crashed_with)
    found = await store.bulk_get(keys)
    lost = [k for k in keys if k not in found or found[k].data != crashed_with[k]]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    # And so did everything acknowledged afterwards.
    found = await store.bulk_get(list(load.acknowledged))
    assert len(found) == len(load.acknowledged)


async def test_frozen_server_times_out_and_recovers(backend: Backend) -> None:
    store, server = backend.store, backend.server
    key = f"frozen-{uuid.uuid4().hex}"
    await store.set(SetRequest(key, b"before"))
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.get(key)
        took = time.monotonic() - started
        print(f"get failed after {took:.2f}s")
        assert took < FAIL_WITHIN, f"get took {took:.2f}s"
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.set(SetRequest(key, b"during"))
        with pytest.raises(BackendUnavailable):
            await store.ping()
        took = time.monotonic() - started
        print(f"set and ping failed after {took:.2f}s")
        assert took < 2 * FAIL_WITHIN, f"set and ping took {took:.2f}s"
    finally:
        server.resume()
    await wait_until_ping(store, 20)
    item = await store.get(key)
    assert item is not None and item.data in (b"before", b"during")
    await store.set(SetRequest(key, b"after"))
    item = await store.get(key)
    assert item is not None and item.data == b"after"


async def test_clean_restart_is_invisible_after_recovery(backend: Backend) -> None:
    store, server = backend.store, backend.server
    keys = [f"restart-{i}" for i in range(50)]
    await store.transact([SetRequest(k, k.encode()) for k in keys])
    await asyncio.to_thread(server.restart)
    print(f"ping answered {await wait_until_ping(store, 60):.2f}s after the restart began")
    found = await store.bulk_get(keys)
    assert {k: v.data for k, v in found.items()} == {k: k.encode() for k in keys}
    await store.set(SetRequest("restart-new", b"1"))


# --- the same outages seen through the real server process ----------------------------------

SECRET_FIELD = {"redis": "redisPassword", "postgresql": "connectionString", "mysql": "connectionString"}


def component_yaml(name: str, store_type: str, metadata: dict[str, str], secret_field: str) -> str:
    """A Component whose secret item is a `secretKeyRef`, as users write them."""
    items = [
        {"name": k, "secretKeyRef": {"name": "db", "key": "secret"}}
        if k == secret_field
        else {"name": k, "value": v}
        for k, v in metadata.items()
    ]
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": store_type, "version": "v1", "metadata": items},
    }
    return yaml.safe_dump(doc)


@contextlib.contextmanager
def served(
    own_server: tuple[str, Server], tmp_path: Path, *, wait_ready: bool = True
) -> Iterator[tuple[str, str, Path]]:
    """The real `statestore-sidecar` serving a store on the test's own server: (url, secret, log)."""
    name, server = own_server
    _, store_type, make_metadata = BACKENDS[name]
    metadata = make_metadata(server)
    secret = metadata[SECRET_FIELD[name]]
    (tmp_path / "store.yaml").write_text(component_yaml("store", store_type, metadata, SECRET_FIELD[name]))
    log = tmp_path / "server.log"
    env = {secret_env_var("db", "secret"): secret}
    with sidecar(
        ["--resources-path", str(tmp_path / "store.yaml"), "--log-level", "debug"],
        env=env,
        log=log,
        wait_ready=wait_ready,
    ) as url:
        yield url, secret, log


async def wait_for_health(api: httpx.AsyncClient, status: int, seconds: float) -> float:
    started = time.monotonic()
    while True:
        r = await api.get("/v1.0/healthz")
        if r.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"health stayed {r.status_code}: {r.text}"
        await asyncio.sleep(0.1)


async def test_outage_through_the_api_fails_fast_and_recovers(
    own_server: tuple[str, Server], tmp_path: Path
) -> None:
    _, server = own_server
    with served(own_server, tmp_path) as (url, secret, log):
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            acknowledged: dict[str, int] = {}
            running = True

            async def writer(n: int) -> None:
                i = 0
                while running:
                    i += 1
                    key = f"w{n}-{i}"
                    r = await api.post("/v1.0/state/store", json=[{"key": key, "value": i}])
                    if r.status_code == 204:
                        acknowledged[key] = i
                    else:
                        assert r.status_code == 500 and r.json()["errorCode"] == "ERR_STATE_SAVE", r.text
                        await asyncio.sleep(0.05)

            writers = [asyncio.create_task(writer(n)) for n in range(4)]
            await until("10 acknowledged writes", lambda: len(acknowledged) >= 10)
            server.stop(kill=True)
            before_outage = len(acknowledged)
            try:
                await wait_for_health(api, 500, 30)
                health = await api.get("/v1.0/healthz")
                assert health.json()["errorCode"] == "ERR_HEALTH_NOT_READY"
                assert (await api.get("/v1.0/healthz/outbound")).status_code == 500
                for method, path, body in (
                    ("GET", "/v1.0/state/store/k", None),
                    ("POST", "/v1.0/state/store", [{"key": "k", "value": 1}]),
                    ("POST", "/v1.0/state/store/bulk", {"keys": ["k"]}),
                    ("DELETE", "/v1.0/state/store/k", None),
                ):
                    started = time.monotonic()
                    r = await api.request(method, path, json=body)
                    took = time.monotonic() - started
                    assert r.status_code == 500, r.text
                    assert r.json()["errorCode"].startswith("ERR_STATE_"), r.text
                    print(f"{method} {path} failed after {took:.2f}s during the outage")
                    assert took < FAIL_WITHIN, f"{method} {path} took {took:.2f}s during the outage"
            finally:
                server.start()
            await wait_for_health(api, 204, 60)
            resumed_from = len(acknowledged)
            await until("writes to resume", lambda: len(acknowledged) >= resumed_from + 10)
            running = False
            await asyncio.gather(*writers)
            assert before_outage > 0
            assert (
                await api.post("/v1.0/state/store", json=[{"key": "after", "value": 1}])
            ).status_code == 204
            found = (await api.post("/v1.0/state/store/bulk", json={"keys": list(acknowledged)})).json()
            lost = [e["key"] for e in found if e.get("data") != acknowledged[e["key"]]]
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    text = log.read_text()
    assert secret not in text
    assert "ready" in text


async def test_start_up_with_the_backend_down_waits_unready(
    own_server: tuple[str, Server], tmp_path: Path
) -> None:
    _, server = own_server
    server.stop()
    try:
        with served(own_server, tmp_path, wait_ready=False) as (url, secret, log):
            async with httpx.AsyncClient(base_url=url, timeout=30) as api:
                # Two failed attempts to reach the backend, and the process is still alive: no crash loop.
                await until("two retries", lambda: log.read_text().count("retrying") >= 2)
                assert (await api.get("/livez")).status_code == 204
                health = await api.get("/v1.0/healthz")
                assert health.status_code == 500
                assert "state store store" in health.json()["message"]
                r = await api.get("/v1.0/state/store/k")
                assert r.status_code == 500
                assert r.json()["errorCode"] == "ERR_STATE_GET"
                assert secret not in r.text
                server.start()
                took = await wait_for_health(api, 204, 60)
                print(f"ready {took:.2f}s after the backend came up")
                r = await api.post("/v1.0/state/store", json=[{"key": "k", "value": "up"}])
                assert r.status_code == 204
                assert (await api.get("/v1.0/state/store/k")).json() == "up"
            text = log.read_text()
            assert "retrying" in text
            assert secret not in text
    finally:
        if not server.running:
            server.start()
