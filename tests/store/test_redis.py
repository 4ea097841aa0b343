"""`state.redis` specifics, against a real redis-server (see tests/fixtures/backends.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from fixtures.backends import RedisServer, free_port
from fixtures.stores import built_as, initialised
from statestore_sidecar import components
from statestore_sidecar import query as q
from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores import StoreConfig, create_store
from statestore_sidecar.stores.base import (
    BackendUnavailable,
    DeleteRequest,
    EtagMismatch,
    Feature,
    QueryError,
    SetRequest,
)
from statestore_sidecar.stores.redis.metadata import SCHEMA, parse_host
from statestore_sidecar.stores.redis.store import RedisStore

DOCS = Path(__file__).parent / "dapr_docs"


def make(metadata: dict[str, str]) -> RedisStore:
    return built_as(RedisStore, "state.redis", metadata, "redis-test")


@pytest.fixture
async def redis_store(redis_metadata: dict[str, str]) -> AsyncIterator[RedisStore]:
    async with initialised(make(redis_metadata)) as store:
        yield store


def key() -> str:
    return f"redis-test||{uuid.uuid4().hex}"


# --- metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("localhost:6379", None, ("localhost", 6379)),
        (
            "redis-master.default.svc.cluster.local:6380",
            None,
            ("redis-master.default.svc.cluster.local", 6380),
        ),
        ("10.0.0.1", None, ("10.0.0.1", 6379)),
        ("10.0.0.1", 7000, ("10.0.0.1", 7000)),
        ("[::1]:6390", None, ("::1", 6390)),
        ("::1", None, ("::1", 6379)),
    ],
)
def test_parse_host(host: str, port: int | None, expected: tuple[str, int]) -> None:
    assert parse_host(host, port) == expected


@pytest.mark.parametrize("host", ["a:6379,b:6379", "redis://localhost:6379", "localhost:notaport", ":6379"])
def test_parse_host_refuses(host: str) -> None:
    with pytest.raises(MetadataError):
        parse_host(host, None)


def test_schema_defaults() -> None:
    values = resolve(SCHEMA, {"redisHost": "localhost:6379"})
    assert values["redisDB"] == 0
    assert values["dialTimeout"] == 5.0
    assert values["readTimeout"] == 3.0
    assert values["redisMaxRetries"] == 3
    assert values["redisType"] == "node"
    assert values["enableTLS"] is False
    assert values["ttlInSeconds"] is None
    assert Feature.QUERY_API not in SCHEMA.features


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("redisType", "sentinel"),
        ("failover", "maybe"),
        ("sentinelMasterName", "mymaster"),  # without failover: true
        ("useEntraID", "true"),
        ("useOIDC", "true"),
        ("redisDB", "-1"),
        ("dialTimeout", "soon"),
        ("queryIndexes", "{not json"),
    ],
)
def test_refused_metadata(name: str, value: str) -> None:
    with pytest.raises(MetadataError) as info:
        resolve(SCHEMA, {"redisHost": "localhost:6379", name: value})
    assert info.value.field == name


def test_refused_at_create() -> None:
    with pytest.raises(MetadataError, match="redisType: cluster"):
        make({"redisHost": "a:1,b:2"})
    with pytest.raises(MetadataError, match="enableTLS"):
        make({"redisHost": "a:1", "clientCert": "x", "clientKey": "y"})
    with pytest.raises(MetadataError, match="together"):
        make({"redisHost": "a:1", "enableTLS": "true", "clientCert": "x"})


def test_aliases_and_durations() -> None:
    values = resolve(
        SCHEMA, {"redisHost": "h", "maxRetries": "5", "maxRetryBackoff": "2s", "readTimeout": "250ms"}
    )
    assert values["redisMaxRetries"] == 5
    assert values["redisMaxRetryInterval"] == 2.0
    assert values["readTimeout"] == 0.25


def test_dapr_documentation_components_load_unchanged() -> None:
    loaded = components.load([DOCS / "redis.yaml"])
    assert [c.name for c in loaded.stores] == ["statestore", "statestore-local"]
    env = {components.secret_env_var("redis", "redis-password"): "s3cret"}
    for component in loaded.stores:
        validated = components.validate(component, components.metadata_values(component, env))
        assert validated.warnings == ()
        assert validated.metadata["actorStateStore"] is True
        create_store(component.type, StoreConfig(component.name, validated.metadata))
    k8s = components.validate(loaded.stores[0], components.metadata_values(loaded.stores[0], env))
    assert k8s.metadata["redisPassword"] == "s3cret"
    assert k8s.metadata["redisHost"] == "redis-master.default.svc.cluster.local:6379"


# --- behaviour against the real server ----------------------------------------------------------


@pytest.mark.backends
async def test_features_and_query_refused(redis_store: RedisStore) -> None:
    assert Feature.QUERY_API not in redis_store.features
    assert {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL} <= redis_store.features
    assert "search" not in redis_store.modules
    with pytest.raises(QueryError):
        await redis_store.query(q.parse({}), "")


@pytest.mark.backends
async def test_items_are_hashes_with_integer_etags(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    k = key()
    await redis_store.set(SetRequest(k, b'{"a":1}'))
    first = await redis_store.get(k)
    assert first is not None and first.etag.isdigit()
    raw = redis_server.command("HGET", k, "data")
    assert raw == b'$7\r\n{"a":1}\r\n'
    await redis_store.set(SetRequest(k, b"2", etag=first.etag))
    second = await redis_store.get(k)
    assert second is not None and int(second.etag) > int(first.etag)
    # A deleted and re-created key never repeats an earlier etag.
    await redis_store.delete(DeleteRequest(k))
    await redis_store.set(SetRequest(k, b"3"))
    third = await redis_store.get(k)
    assert third is not None and int(third.etag) > int(second.etag)
    with pytest.raises(EtagMismatch):
        await redis_store.set(SetRequest(k, b"4", etag=first.etag))


@pytest.mark.backends
async def test_non_integer_etag_is_a_mismatch(redis_store: RedisStore) -> None:
    k = key()
    await redis_store.set(SetRequest(k, b"1"))
    with pytest.raises(EtagMismatch):
        await redis_store.set(SetRequest(k, b"2", etag="not-a-number"))
    with pytest.raises(EtagMismatch):
        await redis_store.delete(DeleteRequest(k, etag="not-a-number"))
    with pytest.raises(EtagMismatch):
        await redis_store.set(SetRequest(key(), b"2", etag="1"))


@pytest.mark.backends
async def test_ttl_is_redis_key_expiry(redis_store: RedisStore, redis_server: RedisServer) -> None:
    k = key()
    await redis_store.set(SetRequest(k, b"1", ttl=100))
    pttl = int(redis_server.command("PTTL", k)[1:].split(b"\r\n")[0])
    assert 95_000 < pttl <= 100_000
    item = await redis_store.get(k)
    assert item is not None and item.expires_at is not None
    assert abs(item.expires_at - (time.time() + 100)) < 2
    await redis_store.set(SetRequest(k, b"2"))
    assert redis_server.command("PTTL", k) == b":-1\r\n"


@pytest.mark.backends
async def test_component_default_ttl(redis_metadata: dict[str, str]) -> None:
    store = make({**redis_metadata, "ttlInSeconds": "60"})
    await store.init()
    try:
        k = key()
        await store.set(SetRequest(k, b"1"))
        item = await store.get(k)
        assert item is not None and item.expires_at is not None
        assert abs(item.expires_at - (time.time() + 60)) < 2
        await store.set(SetRequest(k, b"1", ttl=5))  # the request wins
        item = await store.get(k)
        assert item is not None and item.expires_at is not None and item.expires_at < time.time() + 6
        await store.set(SetRequest(k, b"1", ttl=-1))  # -1 ignores the default
        item = await store.get(k)
        assert item is not None and item.expires_at is None
        await store.transact([SetRequest(k, b"2")])
        item = await store.get(k)
        assert item is not None and item.expires_at is not None
    finally:
        await store.close()


@pytest.mark.backends
async def test_scripts_reload_after_script_flush(redis_store: RedisStore, redis_server: RedisServer) -> None:
    k = key()
    await redis_store.set(SetRequest(k, b"1"))
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    await redis_store.set(SetRequest(k, b"2"))
    item = await redis_store.get(k)
    assert item is not None and item.data == b"2"


@pytest.mark.backends
async def test_transaction_with_repeated_keys_sees_its_own_writes(redis_store: RedisStore) -> None:
    k = key()
    await redis_store.set(SetRequest(k, b"0"))
    current = await redis_store.get(k)
    assert current is not None
    await redis_store.transact(
        [SetRequest(k, b"1", etag=current.etag), SetRequest(k, b"2"), DeleteRequest(k), SetRequest(k, b"3")]
    )
    item = await redis_store.get(k)
    assert item is not None and item.data == b"3"


@pytest.mark.backends
async def test_bulk_get_of_binary_and_missing(redis_store: RedisStore) -> None:
    keys = [key() for _ in range(3)]
    await redis_store.set(SetRequest(keys[0], b"\xff\x00\x01"))
    await redis_store.set(SetRequest(keys[1], orjson.dumps({"x": "ü"})))
    found = await redis_store.bulk_get([*keys, keys[0]])
    assert set(found) == set(keys[:2])
    assert found[keys[0]].data == b"\xff\x00\x01"


@pytest.mark.backends
async def test_wrong_password_is_backend_unavailable(redis_metadata: dict[str, str]) -> None:
    store = make({**redis_metadata, "redisPassword": "wrong"})
    with pytest.raises(BackendUnavailable, match=r"authentication|AUTH|password"):
        await store.init()
    await store.close()


@pytest.mark.backends
async def test_unreachable_server_fails_fast() -> None:
    store = make({"redisHost": f"127.0.0.1:{free_port()}", "dialTimeout": "1s", "readTimeout": "1s"})
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await store.init()
    assert time.monotonic() - started < 5
    with pytest.raises(BackendUnavailable):
        await store.ping()
    await store.close()


@pytest.mark.backends
async def test_concurrent_transactions_stay_consistent(redis_store: RedisStore) -> None:
    a, b = key(), key()
    await redis_store.transact([SetRequest(a, b"0"), SetRequest(b, b"0")])

    async def move(i: int) -> None:
        for _ in range(10):
            while True:
                found = await redis_store.bulk_get([a, b])
                x, y = found[a], found[b]
                try:
                    await redis_store.transact(
                        [
                            SetRequest(a, str(int(x.data) + 1).encode(), etag=x.etag),
                            SetRequest(b, str(int(y.data) - 1).encode(), etag=y.etag),
                        ]
                    )
                    break
                except EtagMismatch:
                    await asyncio.sleep(0)

    await asyncio.gather(*(move(i) for i in range(5)))
    found = await redis_store.bulk_get([a, b])
    assert int(found[a].data) == 50 and int(found[b].data) == -50


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_tls_server() -> Iterator[RedisServer]:
    """A TLS-only redis-server that requires client certificates."""
    server = RedisServer(tls=True, tls_auth_clients="yes")
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def tls_metadata(server: RedisServer, **extra: str) -> dict[str, str]:
    assert server.pki is not None
    return {
        "redisHost": server.address,
        "redisPassword": server.password,
        "enableTLS": "true",
        "clientCert": server.pki.client_cert.read_text(),
        "clientKey": server.pki.client_key.read_text(),
        "dialTimeout": "2s",
        **extra,
    }


@pytest.mark.backends
async def test_tls_with_client_certificate(redis_tls_server: RedisServer) -> None:
    # Dapr's Redis has no CA setting: the server's certificate can only be trusted from the system
    # roots, so a private CA needs insecureSkipTLSVerify.
    store = make(tls_metadata(redis_tls_server, insecureSkipTLSVerify="true"))
    await store.init()
    try:
        await store.set(SetRequest("tls-key", b'"over TLS"'))
        item = await store.get("tls-key")
        assert item is not None and item.data == b'"over TLS"'
    finally:
        await store.close()


@pytest.mark.backends
@pytest.mark.parametrize(
    "change",
    [
        {"insecureSkipTLSVerify": "false"},  # the private CA is not trusted
        {
            "clientCert": "",
            "clientKey": "",
            "insecureSkipTLSVerify": "true",
        },  # the server wants a certificate
        {"enableTLS": "false", "clientCert": "", "clientKey": ""},  # plain text to a TLS port
    ],
)
async def test_tls_refusals_are_backend_unavailable(
    redis_tls_server: RedisServer, change: dict[str, str]
) -> None:
    store = make({**tls_metadata(redis_tls_server), **change})
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await store.init()
    assert time.monotonic() - started < 10
    await store.close()
