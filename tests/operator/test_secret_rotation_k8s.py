"""Secret rotation against a real API server: a referenced Secret's value change rolls exactly the pods
that read it; anything else (another Secret, a key nobody reads, a re-apply of the same data) rolls nothing.

"Nothing" is asserted only after the operator has provably reconciled the Component since the change:
the test then edits the Component's `scopes` (a new generation that does not touch its pods) and waits
for `status.observedGeneration` to reach it. That reconciliation re-read the Secrets.
"""

from __future__ import annotations

from typing import Any

import pytest
from operator_testing import Kube, Operator, settled, wait_for

pytestmark = pytest.mark.k8s

SECRETS_HASH = "statestore.dapr.io/secrets-hash"


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def redis(name: str, secret_name: str, scopes: list[str], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "value": "redis.example:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": secret_name, "key": "password"}},
            ],
        },
        # Two or more scopes: the app id stays the Component name, so a scope edit leaves the pods alone.
        "scopes": scopes,
    }


def template(kube: Kube, component: str) -> tuple[int, dict[str, str]]:
    deploy = kube.must_get("deployment", f"statestore-{component}")
    return int(deploy["metadata"]["generation"]), dict(deploy["spec"]["template"]["metadata"]["annotations"])


def reconciled_after_now(kube: Kube, body: dict[str, Any], scopes: list[str]) -> None:
    """Make the operator reconcile the Component once more, and wait until it has."""
    body = {**body, "scopes": scopes}
    kube.apply(body)
    generation = kube.must_get("components.dapr.io", body["metadata"]["name"])["metadata"]["generation"]

    def observed() -> bool:
        current = kube.get("components.dapr.io", body["metadata"]["name"]) or {}
        return bool(current.get("status", {}).get("observedGeneration") == generation)

    wait_for(f"observedGeneration {generation}", observed)


def test_value_change_rolls_exactly_the_pods_that_read_it(kube: Kube, operator: Operator) -> None:
    kube.apply(secret("auth-a", password="one", unused="x"))
    kube.apply(secret("auth-b", password="two"))
    kube.apply(secret("elsewhere", password="three"))
    a = redis("a", "auth-a", ["x", "y"])
    b = redis("b", "auth-b", ["x", "y"])
    kube.apply(a)
    kube.apply(b)
    for name in ("a", "b"):
        kube.wait_condition(name, "Validated", "True")
    settled(kube, ("deployment", "statestore-a"), ("deployment", "statestore-b"))
    gen_a, ann_a = template(kube, "a")
    gen_b, ann_b = template(kube, "b")
    assert SECRETS_HASH in ann_a and ann_a[SECRETS_HASH] != ann_b[SECRETS_HASH]

    # A's password changes: A's pod template changes (found by the periodic re-check, no Secret watch).
    kube.apply(secret("auth-a", password="rotated", unused="x"))
    wait_for("a new secrets hash on a", lambda: template(kube, "a")[1][SECRETS_HASH] != ann_a[SECRETS_HASH])
    gen_a2, ann_a2 = template(kube, "a")
    assert gen_a2 == gen_a + 1
    assert ann_a2["statestore.dapr.io/config-hash"] == ann_a["statestore.dapr.io/config-hash"]
    # ...and B, which reads another Secret, is untouched once it has been reconciled since.
    reconciled_after_now(kube, b, ["x", "y", "z"])
    assert template(kube, "b") == (gen_b, ann_b)

    # A Secret nobody reads, a key A does not read, and a re-apply of the same data: no rollout.
    kube.apply(secret("elsewhere", password="changed"))
    kube.apply(secret("auth-a", password="rotated", unused="changed"))
    kube.apply(secret("auth-a", password="rotated", unused="changed"))
    reconciled_after_now(kube, a, ["x", "y", "z"])
    reconciled_after_now(kube, b, ["x", "y"])
    assert template(kube, "a") == (gen_a2, ann_a2)
    assert template(kube, "b") == (gen_b, ann_b)


def test_named_token_secret_change_rolls_the_pods(kube: Kube, operator: Operator) -> None:
    kube.apply(secret("auth", password="one"))
    kube.apply(secret("my-token", token="first"))
    kube.apply(redis("c", "auth", ["x", "y"], **{"statestore.dapr.io/api-token-secret": "my-token"}))
    kube.wait_condition("c", "Validated", "True")
    settled(kube, ("deployment", "statestore-c"))
    gen, ann = template(kube, "c")
    kube.apply(secret("my-token", token="second"))
    wait_for("a new secrets hash", lambda: template(kube, "c")[1][SECRETS_HASH] != ann[SECRETS_HASH])
    assert template(kube, "c")[0] == gen + 1
