"""State encryption through the operator: a key of the wrong length in its Secret is reported on the
Component (never quoted); with good keys the rendered pod gets them by `secretKeyRef` env only and
stores sealed values in the real Redis; docs/security.md's key and rotation commands work."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from operator_testing import Kube, Operator, rendered_pod, run_documented

from fixtures.backends import RedisServer
from fixtures.docs import documented
from statestore_testing.waiting import wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.backends]

SHORT_KEY = "0a1b2c3d4e5f60718293"  # 80 bits
GOOD_KEY = "000102030405060708090a0b0c0d0e0f"


def secret(name: str, key: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"key": key}}


def encrypted_redis(name: str, redis_server: RedisServer) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "value": f"{redis_server.host}:{redis_server.port}"},
                {"name": "redisPassword", "value": redis_server.password},
                {"name": "primaryEncryptionKey", "secretKeyRef": {"name": f"{name}-key", "key": "key"}},
            ],
        },
    }


def sealed_with(redis_server: RedisServer, key: str) -> bytes:
    """The secret name a stored value's suffix names (asserting the rest is daprd's sealed form)."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port, password=redis_server.password)
    try:
        stored = client.hget(key, "data")
    finally:
        client.close()
    assert isinstance(stored, bytes)
    match = re.fullmatch(rb"[A-Za-z0-9+/]+=*\|\|(.+)", stored)
    assert match is not None, stored
    return match.group(1)


def test_a_short_key_is_reported_then_a_good_one_serves_sealed_state(
    kube: Kube, operator: Operator, redis_server: RedisServer, tmp_path: Path
) -> None:
    kube.apply(secret("vault-key", SHORT_KEY))
    kube.apply(encrypted_redis("vault", redis_server))
    cond = kube.wait_condition("vault", "Validated", "False", "InvalidMetadata")
    assert cond["message"].startswith("metadata 'primaryEncryptionKey': the key is 80 bits")
    assert SHORT_KEY not in cond["message"]
    events = wait_for(
        "a Warning event", lambda: [e for e in kube.events("vault") if e["reason"] == "InvalidMetadata"]
    )
    assert all(SHORT_KEY not in e["message"] for e in events)
    assert kube.get("deployment", "statestore-vault") is None

    kube.apply(secret("vault-key", GOOD_KEY))
    kube.wait_condition("vault", "Validated", "True", "Valid", timeout=90)
    cm = kube.must_get("configmap", "statestore-vault")
    assert GOOD_KEY not in json.dumps(cm)  # the key travels by env only
    with rendered_pod(kube, "vault", tmp_path) as url:
        saved = httpx.post(f"{url}/v1.0/state/vault", json=[{"key": "k", "value": {"card": "4111"}}])
        assert saved.status_code == 204, saved.text
        assert httpx.get(f"{url}/v1.0/state/vault/k").json() == {"card": "4111"}
    assert sealed_with(redis_server, "vault||k") == b"vault-key"


def test_documented_key_and_rotation(
    kube: Kube, operator: Operator, redis_server: RedisServer, tmp_path: Path
) -> None:
    address = f"{redis_server.host}:{redis_server.port}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis"},
            "stringData": {"redis-password": redis_server.password},
        }
    )
    run_documented(kube, tmp_path, documented("security.md", "encryption-key"))
    kube.apply(documented("security.md", "encryption-component").replace("redis-master:6379", address))
    kube.wait_condition("orders", "Validated", "True", "Valid")
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    with rendered_pod(kube, "orders", tmp_path / "before") as url:
        saved = httpx.post(f"{url}/v1.0/state/orders", json=[{"key": "old", "value": "written first"}])
        assert saved.status_code == 204, saved.text
    assert sealed_with(redis_server, "orders||old") == b"orders-key-1"

    run_documented(kube, tmp_path, documented("security.md", "encryption-key-2"))
    kube.apply(documented("security.md", "encryption-rotated").replace("redis-master:6379", address))
    wait_for(
        "the rotated Component rendered",
        lambda: "secondaryEncryptionKey" in json.dumps(kube.must_get("configmap", "statestore-orders")),
    )
    kube.wait_condition("orders", "Validated", "True", "Valid")
    with rendered_pod(kube, "orders", tmp_path / "after") as url:
        assert httpx.get(f"{url}/v1.0/state/orders/old").json() == "written first"
        saved = httpx.post(f"{url}/v1.0/state/orders", json=[{"key": "new", "value": "written after"}])
        assert saved.status_code == 204, saved.text
        assert httpx.get(f"{url}/v1.0/state/orders/new").json() == "written after"
    assert sealed_with(redis_server, "orders||old") == b"orders-key-1"
    assert sealed_with(redis_server, "orders||new") == b"orders-key-2"
