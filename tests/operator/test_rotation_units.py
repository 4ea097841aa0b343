"""The secrets hash on the pod template (pure): what changes it and what does not."""

from __future__ import annotations

import base64
from typing import Any

from statestore_operator import render, rotation
from statestore_sidecar.components import parse

PODS = render.PodSettings(image="img:1")


def body() -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "value": "h:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "auth", "key": "pw"}},
            ],
        },
    }


def secret(uid: str = "sid", **data: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "auth", "uid": uid},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def pod_annotations(secrets: dict[str, Any]) -> dict[str, str]:
    b = body()
    dep = render.deployment(b, parse(b), PODS, secrets=secrets)
    return dict(dep["spec"]["template"]["metadata"]["annotations"])


def test_value_change_changes_the_hash_other_keys_do_not() -> None:
    first = pod_annotations({"auth": secret(pw="one", other="x")})
    assert pod_annotations({"auth": secret(pw="one", other="y")}) == first
    assert pod_annotations({"auth": secret(pw="one", other="x"), "elsewhere": secret(pw="z")}) == first
    changed = pod_annotations({"auth": secret(pw="two", other="x")})
    assert changed[rotation.SECRETS_HASH_ANNOTATION] != first[rotation.SECRETS_HASH_ANNOTATION]
    assert changed["statestore.dapr.io/config-hash"] == first["statestore.dapr.io/config-hash"]


def test_missing_secret_and_recreated_secret_differ() -> None:
    present = pod_annotations({"auth": secret(pw="one")})[rotation.SECRETS_HASH_ANNOTATION]
    assert pod_annotations({"auth": None})[rotation.SECRETS_HASH_ANNOTATION] != present
    assert pod_annotations({"auth": secret(uid="new", pw="one")})[rotation.SECRETS_HASH_ANNOTATION] != present


def test_no_secret_reference_no_annotation() -> None:
    b = body()
    b["spec"]["metadata"] = [{"name": "redisHost", "value": "h:6379"}]
    dep = render.deployment(b, parse(b), PODS, secrets={})
    assert rotation.SECRETS_HASH_ANNOTATION not in dep["spec"]["template"]["metadata"]["annotations"]


def test_the_value_is_not_recoverable_without_the_uid() -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "pw"}}}]
    with_uid = rotation.secrets_digest(env, {"auth": secret(uid="a", pw="hunter2")})
    assert with_uid != rotation.secrets_digest(env, {"auth": secret(uid="", pw="hunter2")})
