"""Faults under the operator, against a real control plane: SIGKILL mid-batch and an API server restart."""

from __future__ import annotations

import collections
import json
import threading
import urllib.request
from typing import Any

import pytest
from operator_testing import Kube, Operator, WaitTimeout, reconciled, reconciles, wait_for

pytestmark = pytest.mark.k8s

KINDS = ("deployments", "services", "configmaps", "secrets", "networkpolicies")


def component(name: str, *, guarded: bool = False) -> dict[str, Any]:
    """An in-memory store; `guarded` ones also get a generated token and a scoped NetworkPolicy."""
    doc: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    if guarded:
        doc["metadata"]["annotations"] = {"statestore.dapr.io/api-token": "generate"}
        doc["scopes"] = [f"app-{name}"]
    return doc


def owned_objects(kube: Kube) -> list[dict[str, Any]]:
    """Everything in the namespace carrying the operator's managed-by label."""
    data = kube.cluster.kubectl_json(
        "get", ",".join(KINDS), "-n", kube.ns, "-l", "app.kubernetes.io/managed-by=statestore-operator"
    )
    items: list[dict[str, Any]] = data.get("items") or []
    return items


def components(kube: Kube) -> dict[str, dict[str, Any]]:
    data = kube.cluster.kubectl_json("get", "components.dapr.io", "-n", kube.ns)
    return {c["metadata"]["name"]: c for c in data.get("items") or []}


def converged(kube: Kube, expected: dict[str, bool]) -> bool:
    """Every Component's status is current and correct, and its objects are exactly those it should own."""
    found = components(kube)
    if set(found) != set(expected):
        return False
    by_owner: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for obj in owned_objects(kube):
        (ref,) = obj["metadata"]["ownerReferences"]
        by_owner[ref["uid"]].append((obj["kind"], obj["metadata"]["name"]))
    if set(by_owner) != {c["metadata"]["uid"] for c in found.values()}:
        return False  # an object of a deleted Component, or a Component without objects
    for name, body in found.items():
        status = body.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        if status.get("observedGeneration") != body["metadata"]["generation"]:
            return False
        if (conds.get("Validated") or {}).get("status") != "True":
            return False
        if (conds.get("Available") or {}).get("reason") != "Progressing":  # pods stay Pending here
            return False
        want = [("ConfigMap", f"statestore-{name}"), ("Deployment", f"statestore-{name}")]
        want.append(("Service", f"statestore-{name}"))
        if expected[name]:
            want += [("NetworkPolicy", f"statestore-{name}"), ("Secret", f"statestore-{name}-api-token")]
        if sorted(by_owner[body["metadata"]["uid"]]) != sorted(want):
            return False
    return True


def kill_when_started(kube: Kube, operator: Operator, count: int) -> threading.Thread:
    """SIGKILL the operator the moment it has made its `count`-th ConfigMap (the first object of each
    Component), seen through a watch opened before anything is applied: polling is too slow, the
    operator makes 20 Components' objects in well under a second."""
    assert operator.proc is not None
    proc = operator.proc
    selector = "app.kubernetes.io%2Fmanaged-by%3Dstatestore-operator"
    url = f"{kube.cluster.server}/api/v1/namespaces/{kube.ns}/configmaps?watch=1&labelSelector={selector}"
    response = urllib.request.urlopen(url, context=kube.cluster.ssl_context(), timeout=60)

    def watch() -> None:
        seen = 0
        with response:
            for line in response:
                seen += json.loads(line)["type"] == "ADDED"
                if seen >= count:
                    proc.kill()
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigkill_in_the_middle_of_a_batch_converges_without_duplicates_or_orphans(
    kube: Kube, operator: Operator
) -> None:
    expected = {f"store-{i:02d}": i % 4 == 0 for i in range(20)}
    killer = kill_when_started(kube, operator, count=3)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [component(name, guarded=guarded) for name, guarded in expected.items()],
        }
    )
    # Killed as soon as the first few objects exist: most Components are half done or not started.
    killer.join(60)
    assert not killer.is_alive(), "the operator made no objects"
    operator.kill()
    before = {(o["kind"], o["metadata"]["name"]): o for o in owned_objects(kube)}
    total = 3 * 20 + 2 * 5  # three objects per Component, two more per guarded one
    assert len(before) < total, "the operator had finished before it was killed: nothing was tested"
    print(f"killed with {len(before)} of {total} objects made")
    tokens_before = {k: o["data"] for k, o in before.items() if k[0] == "Secret"}

    # While it is down: some Components go (with or without objects so far), one changes.
    gone = ["store-00", "store-01", "store-19"]
    kube.cluster.kubectl("delete", "components.dapr.io", *gone, "-n", kube.ns, "--wait=true")
    for name in gone:
        del expected[name]
    kube.apply(component("store-05", guarded=True))
    expected["store-05"] = True

    operator.start()
    try:
        wait_for("every Component to converge", lambda: converged(kube, expected), timeout=120)
    except WaitTimeout:
        summary = {
            n: [(c["type"], c["status"], c["reason"]) for c in (b.get("status") or {}).get("conditions", [])]
            for n, b in components(kube).items()
        }
        objects = sorted((o["kind"], o["metadata"]["name"]) for o in owned_objects(kube))
        pytest.fail(f"not converged:\nstatuses {summary}\nobjects {objects}")

    # A token created before the kill was kept, not regenerated.
    for key, data in tokens_before.items():
        if key[1].removesuffix("-api-token").removeprefix("statestore-") in expected:
            assert kube.must_get("secret", key[1])["data"] == data
    # One Event per transition, even across the kill: never two Validated=True Events for a Component.
    for name in expected:
        validated = [e for e in kube.events(name) if e["message"].startswith("Validated=True")]
        assert len(validated) <= 1, (name, validated)

    # Stable: nothing more to do (a Deployment's status is the controller-manager's: compare its spec).
    def versions() -> dict[tuple[str, str], Any]:
        field = {"Deployment": "generation"}
        return {
            (o["kind"], o["metadata"]["name"]): o["metadata"][field.get(o["kind"], "resourceVersion")]
            for o in owned_objects(kube)
        }

    stable = versions()
    reconciled(operator, 2 * len(expected), since=reconciles(operator))  # resync rounds over all
    assert versions() == stable


def test_operator_keeps_reconciling_across_an_api_server_restart(kube: Kube, operator: Operator) -> None:
    kube.apply(component("before"))
    kube.wait_condition("before", "Validated", "True")
    # Down for a while (watches break, requests are refused), then back on the same port and data.
    kube.cluster.restart_apiserver(down=5)
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
    assert "Connect call failed" in operator.output(), "the operator never noticed the API server was gone"

    # A Component created after the restart is picked up (the watch is re-established)...
    kube.apply(component("after", guarded=True))
    kube.wait_condition("after", "Validated", "True", "Valid", timeout=120)
    for kind, name in [
        ("deployment", "statestore-after"),
        ("service", "statestore-after"),
        ("configmap", "statestore-after"),
        ("networkpolicy", "statestore-after"),
        ("secret", "statestore-after-api-token"),
    ]:
        kube.must_get(kind, name)
    # ...and so is a change to one that existed before it.
    kube.apply(component("before", guarded=True))
    wait_for(
        "the NetworkPolicy of the changed Component", lambda: kube.get("networkpolicy", "statestore-before")
    )
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
