"""`state.redis` topology settings (Sentinel, Cluster): the rules the server and the operator share."""

from __future__ import annotations

import pytest

from statestore_sidecar.schema import MetadataError, resolve
from statestore_sidecar.stores import StoreConfig, create_store
from statestore_sidecar.stores.redis.metadata import SCHEMA, parse_hosts
from statestore_sidecar.stores.redis.store import RedisStore

SENTINEL = {"failover": "true", "sentinelMasterName": "mymaster"}


def store(metadata: dict[str, str]) -> RedisStore:
    made = create_store("state.redis", StoreConfig("t", resolve(SCHEMA, metadata)))
    assert isinstance(made, RedisStore)
    return made


def test_parse_hosts_with_each_default_port() -> None:
    assert parse_hosts("a, b:7000 ,[::1]", None) == [("a", 6379), ("b", 7000), ("::1", 6379)]
    assert parse_hosts("s1,s2:5000", None, 26379) == [("s1", 26379), ("s2", 5000)]
    assert parse_hosts("s1,s2", 6000, 26379) == [("s1", 6000), ("s2", 6000)]


@pytest.mark.parametrize("hosts", ["a,,b", "a,", "a:1,a:1", "a,redis://b", "a,b:99999"])
def test_parse_hosts_refuses(hosts: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_hosts(hosts, None)
    assert info.value.field == "redisHost"


def test_sentinel_and_cluster_settings_resolve() -> None:
    sentinel = store({"redisHost": "s1,s2:26380,s3", **SENTINEL, "sentinelPassword": "p"})
    assert sentinel.settings.hosts == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert sentinel.settings.sentinel_auth == {"username": None, "password": "p"}
    one_sentinel = store({"redisHost": "sentinel.default.svc:26379", **SENTINEL})
    assert one_sentinel.settings.hosts == [("sentinel.default.svc", 26379)]
    cluster = store({"redisHost": "n1:7000,n2:7001", "redisType": "cluster"})
    assert cluster.settings.hosts == [("n1", 7000), ("n2", 7001)]
    single_seed = store({"redisHost": "redis-cluster:6379", "redisType": "cluster"})
    assert single_seed.settings.hosts == [("redis-cluster", 6379)]


@pytest.mark.parametrize(
    ("metadata", "field", "words"),
    [
        ({"redisHost": "a", "failover": "true"}, "sentinelMasterName", "required"),
        ({"redisHost": "a", **SENTINEL, "redisType": "cluster"}, "failover", "not implemented"),
        ({"redisHost": "a", "sentinelMasterName": "m"}, "sentinelMasterName", "failover: true"),
        ({"redisHost": "a", "sentinelPassword": "p"}, "sentinelPassword", "failover: true"),
        ({"redisHost": "a", "redisType": "cluster", "redisDB": "1"}, "redisDB", "must be 0"),
        ({"redisHost": "a,b"}, "redisHost", "redisType: cluster"),
        ({"redisHost": "a", "redisType": "sentinel"}, "redisType", ""),
    ],
)
def test_refused_topologies(metadata: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(MetadataError) as info:
        resolve(SCHEMA, metadata)
    assert info.value.field == field
    assert words in str(info.value)


def test_secret_values_are_not_judged() -> None:
    """The operator cannot read Secrets: rules leave out the values it cannot see."""
    resolve(
        SCHEMA,
        {"redisHost": "x", "failover": "true", "sentinelMasterName": ""},
        opaque=["sentinelMasterName"],
    )
    resolve(SCHEMA, {"redisHost": "a,b"}, opaque=["redisHost"])
