"""Claims, replicas, rollouts, disruption budgets and autoscalers of each kind of store, through kubectl."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_testing import ROOT, Kube, Operator, start_with_webhook, wait_for, webhook_configurations

from fixtures.docs import documented

pytestmark = pytest.mark.k8s

A = "statestore.dapr.io/"
STORES: dict[str, list[dict[str, str]]] = {
    "state.sqlite": [{"name": "connectionString", "value": "state.db"}],
    "state.in-memory": [],
    "state.redis": [{"name": "redisHost", "value": "redis.example:6379"}],
    "state.postgresql": [{"name": "connectionString", "value": "host=db.example user=app"}],
}


def component(name: str, ctype: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {A + k: v for k, v in annotations.items()}},
        "spec": {"type": ctype, "version": "v1", "metadata": STORES[ctype]},
    }


def annotate(kube: Kube, name: str, **annotations: str | None) -> None:
    args = [f"{A}{k}-" if v is None else f"{A}{k}={v}" for k, v in annotations.items()]
    kube.cluster.kubectl("annotate", "--overwrite", "-n", kube.ns, "components.dapr.io", name, *args)


def delete_component(kube: Kube, name: str) -> None:
    kube.cluster.kubectl("delete", "-n", kube.ns, "components.dapr.io", name, "--wait=true")


def gone(kube: Kube, kind: str, name: str, timeout: float = 120) -> None:
    wait_for(f"{kind} {name} gone", lambda: kube.get(kind, name) is None, timeout=timeout)


def deployment_where(kube: Kube, name: str, probe: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        dep = kube.get("deployment", name)
        return dep if dep is not None and probe(dep) else None

    return wait_for(f"deployment {name} as wanted", check)


def owners(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or []]


def test_sqlite_gets_a_claim_that_outlives_the_component_by_default(kube: Kube, operator: Operator) -> None:
    kube.apply(component("notes", "state.sqlite"))
    kube.wait_condition("notes", "Validated", "True", "Valid")
    pvc = kube.must_get("pvc", "statestore-notes")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert owners(pvc) == []  # kept when the Component goes
    dep = kube.must_get("deployment", "statestore-notes")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"] == {"claimName": "statestore-notes"}
    (container,) = pod["containers"]
    assert {"name": "data", "mountPath": "/var/lib/statestore"} in container["volumeMounts"]
    assert container["workingDir"] == "/var/lib/statestore"  # where the relative state.db lives
    assert kube.get("pdb", "statestore-notes") is None
    assert kube.get("hpa", "statestore-notes") is None

    delete_component(kube, "notes")
    gone(kube, "deployment", "statestore-notes")  # the collector has run over the Component's objects
    kept = kube.must_get("pvc", "statestore-notes")
    assert kept["metadata"]["uid"] == pvc["metadata"]["uid"]

    # A Component of the same name takes the kept claim (and its data) back.
    kube.apply(component("notes", "state.sqlite"))
    kube.wait_condition("notes", "Available", "False", "Progressing")
    assert kube.must_get("pvc", "statestore-notes")["metadata"]["uid"] == pvc["metadata"]["uid"]


def test_claim_size_class_and_deletion_with_the_component(kube: Kube, operator: Operator) -> None:
    kube.apply(
        component(
            "ledger",
            "state.sqlite",
            **{"storage-size": "2Gi", "storage-class": "fast", "storage-on-delete": "delete"},
        )
    )
    kube.wait_condition("ledger", "Validated", "True", "Valid")
    uid = kube.must_get("components.dapr.io", "ledger")["metadata"]["uid"]
    pvc = kube.must_get("pvc", "statestore-ledger")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert owners(pvc) == [uid]

    # The annotation decides, whenever it changes.
    annotate(kube, "ledger", **{"storage-on-delete": "keep"})
    wait_for("the claim kept", lambda: owners(kube.must_get("pvc", "statestore-ledger")) == [])
    annotate(kube, "ledger", **{"storage-on-delete": None})
    annotate(kube, "ledger", **{"storage-on-delete": "delete"})
    wait_for("the claim owned", lambda: owners(kube.must_get("pvc", "statestore-ledger")) == [uid])

    delete_component(kube, "ledger")
    gone(kube, "pvc", "statestore-ledger")


def test_in_memory_is_one_recreated_replica_and_says_data_is_lost(
    kube: Kube, start_operator: Callable[..., Operator]
) -> None:
    start_operator("--default-replicas", "3")
    kube.apply(component("scratch", "state.in-memory"))
    cond = kube.wait_condition("scratch", "Validated", "True", "Valid")
    assert "lost on every restart" in cond["message"]
    dep = kube.must_get("deployment", "statestore-scratch")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert all("persistentVolumeClaim" not in v for v in dep["spec"]["template"]["spec"]["volumes"])
    assert kube.get("pvc", "statestore-scratch") is None
    assert kube.get("pdb", "statestore-scratch") is None


def test_redis_replicas_budget_spread_and_autoscaler(kube: Kube, operator: Operator) -> None:
    kube.apply(component("cache", "state.redis", replicas="3"))
    kube.wait_condition("cache", "Validated", "True", "Valid")
    dep = deployment_where(kube, "statestore-cache", lambda d: d["spec"]["replicas"] == 3)
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    pdb = kube.must_get("pdb", "statestore-cache")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert kube.get("pvc", "statestore-cache") is None
    # The conditions count the replicas as the Deployment reports them.
    kube.make_pods_ready("cache")
    available = kube.wait_condition("cache", "Available", "True", "Available", timeout=120)
    assert "3/3 replicas available" in available["message"]
    status = kube.must_get("components.dapr.io", "cache")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (3, 3)
    wide = kube.cluster.kubectl("get", "components", "cache", "-n", kube.ns, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["READY-REPLICAS"], columns["REPLICAS"]) == ("3", "3")

    annotate(
        kube,
        "cache",
        **{"autoscale-min-replicas": "2", "autoscale-max-replicas": "5", "autoscale-target-cpu": "70"},
    )
    hpa = kube.must_get("hpa", "statestore-cache")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "statestore-cache",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70

    # Back to one replica, no autoscaler: the budget and the autoscaler go.
    annotate(
        kube,
        "cache",
        replicas="1",
        **{"autoscale-min-replicas": None, "autoscale-max-replicas": None, "autoscale-target-cpu": None},
    )
    gone(kube, "hpa", "statestore-cache")
    gone(kube, "pdb", "statestore-cache")
    deployment_where(kube, "statestore-cache", lambda d: d["spec"]["replicas"] == 1)


def test_postgresql_takes_the_operator_default(kube: Kube, start_operator: Callable[..., Operator]) -> None:
    start_operator("--default-replicas", "2")
    kube.apply(component("orders", "state.postgresql"))
    kube.wait_condition("orders", "Validated", "True", "Valid")
    dep = deployment_where(kube, "statestore-orders", lambda d: d["spec"]["replicas"] == 2)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    kube.must_get("pdb", "statestore-orders")
    assert kube.get("hpa", "statestore-orders") is None


@pytest.mark.parametrize(
    ("ctype", "annotations", "words"),
    [
        ("state.sqlite", {"replicas": "2"}, "runs exactly one replica"),
        ("state.redis", {"replicas": "many"}, "is not a whole number from 1 to 100"),
        ("state.sqlite", {"storage-size": "big"}, "is not a positive quantity"),
    ],
)
def test_bad_annotation_is_reported_with_an_event_and_not_deployed(
    kube: Kube, operator: Operator, ctype: str, annotations: dict[str, str], words: str
) -> None:
    kube.apply(component("bad", ctype, **annotations))
    cond = kube.wait_condition("bad", "Validated", "False", "InvalidAnnotation")
    (key,) = annotations
    assert A + key in cond["message"] and words in cond["message"]
    events = wait_for(
        "a Warning event", lambda: [e for e in kube.events("bad") if e["reason"] == "InvalidAnnotation"]
    )
    assert events[0]["type"] == "Warning" and words in events[0]["message"]
    assert kube.get("deployment", "statestore-bad") is None
    assert kube.get("pvc", "statestore-bad") is None


def test_webhook_refuses_a_bad_annotation(kube: Kube, start_operator: Any, tmp_path: Path) -> None:
    _, config = start_with_webhook(kube, start_operator, tmp_path)
    try:
        wait_for(
            "the webhook configuration",
            lambda: "validatingwebhookconfiguration" in webhook_configurations(kube, config),
        )
        bad = component("notes", "state.sqlite", replicas="3")
        refused = kube.cluster.kubectl("apply", "-n", kube.ns, "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0
        assert f"{A}replicas" in refused.stderr and "exactly one replica" in refused.stderr
        assert kube.get("components.dapr.io", "notes") is None
        kube.apply(component("notes", "state.sqlite", **{"storage-size": "3Gi"}))
        kube.wait_condition("notes", "Validated", "True", "Valid")
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kube.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)


def test_documented_example_and_the_shipped_sqlite_example(kube: Kube, operator: Operator) -> None:
    block = documented("operator.md", "scaling-component")
    kube.apply(block)
    kube.wait_condition("orders", "Validated", "True", "Valid")
    hpa = kube.must_get("hpa", "statestore-orders")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    kube.must_get("pdb", "statestore-orders")
    # examples/statestore.yaml, as shipped: its relative database lands on a claim, not an emptyDir.
    kube.apply((ROOT / "examples" / "statestore.yaml").read_text())
    kube.wait_condition("statestore", "Validated", "True", "Valid")
    assert kube.must_get("pvc", "statestore-statestore")["spec"]["resources"]["requests"]["storage"] == "1Gi"
    dep = kube.must_get("deployment", "statestore-statestore")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "statestore-statestore"}
