"""Sidecar mode's per-app-id ConfigMaps against the real control plane (its garbage collector included):
they come with the app's pods, follow its Components, and go when the app's last pod goes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_testing import Kube, Operator, injecting_operator, wait_for

from statestore_testing.waiting import WaitTimeout

pytestmark = pytest.mark.k8s

INJECT = {"statestore.dapr.io/inject": "true"}
LABEL = "statestore.dapr.io/sidecar-app-id"


@pytest.fixture
def injecting(kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path) -> Iterator[Operator]:
    with injecting_operator(kube, start_operator, tmp_path) as op:
        yield op


def component(name: str, scopes: list[str], **meta: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "state.in-memory",
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in meta.items()],
        },
        "scopes": scopes,
    }


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": INJECT},
                "spec": {"containers": [{"name": "app", "image": f"example.test/{name}:1"}]},
            },
        },
    }


def bare_pod(name: str, annotations: dict[str, str], image: str = "example.test/app:1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def pods_of(kube: Kube, app: str) -> list[dict[str, Any]]:
    data = kube.cluster.kubectl_json("get", "pods", "-n", kube.ns, "-l", f"app={app}")
    return [p for p in data.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def wait_for_pods(
    kube: Kube, what: str, probe: Callable[[], list[dict[str, Any]] | None]
) -> list[dict[str, Any]]:
    """Pods the ReplicaSet controller creates through the webhook. Each failed or slow create puts
    the ReplicaSet in the controller's back-off (exponential per item), so on a loaded machine this
    takes longer than the rest: the deadline is generous, and a miss reports the namespace's events."""
    try:
        return wait_for(what, probe, timeout=180)
    except WaitTimeout as exc:
        events = kube.cluster.kubectl("get", "events", "-n", kube.ns, check=False).stdout
        raise WaitTimeout(f"{exc}\nevents in {kube.ns}:\n{events}") from None


def owners(kube: Kube, name: str) -> set[str] | None:
    cm = kube.get("configmap", name)
    return None if cm is None else {o["uid"] for o in cm["metadata"].get("ownerReferences") or []}


def uids(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


def test_config_map_lives_as_long_as_the_apps_pods(kube: Kube, injecting: Operator) -> None:
    kube.apply(component("orders", ["web"], note="one"))
    kube.apply(component("theirs", ["other"]))
    kube.cluster.kubectl("create", "configmap", "keep-me", "-n", kube.ns, "--from-literal=a=b")
    kube.apply(deployment("web", 2))
    kube.apply(bare_pod("other", {**INJECT, "statestore.dapr.io/app-id": "other"}))

    # With the pods: the ConfigMap, owned by each pod that mounts it (and by nothing else).
    pods = wait_for_pods(kube, "two web pods", lambda: p if len(p := pods_of(kube, "web")) == 2 else None)
    assert all(p["metadata"]["labels"][LABEL] == "web" for p in pods)
    wait_for("both pods owning the ConfigMap", lambda: owners(kube, "statestore-app-web") == uids(pods))
    cm = kube.must_get("configmap", "statestore-app-web")
    assert {(o["kind"], o["name"]) for o in cm["metadata"]["ownerReferences"]} == {
        ("Pod", p["metadata"]["name"]) for p in pods
    }
    assert not any(o.get("controller") for o in cm["metadata"]["ownerReferences"])
    assert sorted(cm["data"]) == ["orders.yaml"]
    other = kube.must_get("pod", "other")
    wait_for("the other app's ConfigMap owned", lambda: owners(kube, "statestore-app-other") == uids([other]))

    # A Component changes, comes, goes: the ConfigMap follows and stays (the pods still mount it).
    kube.apply(component("orders", ["web"], note="two"))
    wait_for(
        "the changed Component in the ConfigMap",
        lambda: (
            "two"
            in (kube.get("configmap", "statestore-app-web") or {}).get("data", {}).get("orders.yaml", "")
        ),
    )
    doc = yaml.safe_load(kube.must_get("configmap", "statestore-app-web")["data"]["orders.yaml"])
    assert {"name": "note", "value": "two"} in doc["spec"]["metadata"]
    kube.apply(component("later", ["web"]))
    wait_for(
        "the new Component", lambda: "later.yaml" in kube.must_get("configmap", "statestore-app-web")["data"]
    )
    for name in ("later", "orders"):
        kube.cluster.kubectl("delete", "components.dapr.io", name, "-n", kube.ns)
    wait_for("no Component left", lambda: not kube.must_get("configmap", "statestore-app-web").get("data"))
    original_uid = kube.must_get("configmap", "statestore-app-web")["metadata"]["uid"]

    # A pod replaced (its ReplicaSet makes a new one): the ConfigMap stays, the new pod owns it too.
    kube.cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "-n", kube.ns)
    replaced = wait_for_pods(
        kube,
        "the replacement pod",
        lambda: p if len(p := pods_of(kube, "web")) == 2 and uids(p) != uids(pods) else None,
    )
    wait_for(
        "the current pods owning it", lambda: uids(replaced) <= (owners(kube, "statestore-app-web") or set())
    )
    assert kube.must_get("configmap", "statestore-app-web")["metadata"]["uid"] == original_uid

    # Deleted by hand while pods still mount it: rendered again (a restarting container needs it).
    kube.cluster.kubectl("delete", "configmap", "statestore-app-web", "-n", kube.ns)
    wait_for("the ConfigMap back", lambda: owners(kube, "statestore-app-web") == uids(replaced))

    # The app's last pod gone (the Deployment deleted): the garbage collector takes the ConfigMap.
    kube.cluster.kubectl("delete", "deployment", "web", "-n", kube.ns)
    wait_for("the ConfigMap gone", lambda: kube.get("configmap", "statestore-app-web") is None, timeout=120)
    assert f"{kube.ns}/statestore-app-web deleted" not in injecting.output()  # the GC's doing
    # Nothing else went: the other app's ConfigMap (its pod lives), the user's, the Components.
    assert owners(kube, "statestore-app-other") == uids([other])
    assert kube.get("configmap", "keep-me") is not None
    assert kube.get("components.dapr.io", "theirs") is not None
    kube.cluster.kubectl("delete", "pod", "other", "-n", kube.ns)
    wait_for("the other app's ConfigMap gone", lambda: kube.get("configmap", "statestore-app-other") is None)
    assert kube.get("configmap", "keep-me") is not None


def test_a_config_map_no_pod_took_is_removed(kube: Kube, injecting: Operator) -> None:
    """The webhook renders the ConfigMap before the API server validates the pod: a pod refused then
    leaves a ConfigMap without an owner, which the operator removes after a resync period."""
    refused = kube.cluster.kubectl(
        "apply",
        "-n",
        kube.ns,
        "-f",
        "-",
        input=json.dumps(bare_pod("refused", {**INJECT, "statestore.dapr.io/app-id": "refused"}, image="")),
        check=False,
    )
    assert refused.returncode != 0 and "image" in refused.stderr, refused.stderr
    kube.apply(bare_pod("kept", {**INJECT, "statestore.dapr.io/app-id": "kept"}))
    wait_for(
        "the operator removing the ownerless ConfigMap",
        lambda: f"sidecar configuration {kube.ns}/statestore-app-refused deleted" in injecting.output(),
    )
    assert kube.get("configmap", "statestore-app-refused") is None
    kept = kube.must_get("pod", "kept")
    assert owners(kube, "statestore-app-kept") == uids([kept])


def test_pods_injected_before_they_were_labelled_become_owners(kube: Kube, injecting: Operator) -> None:
    """A ConfigMap without an owner that an unlabelled pod mounts (injected by an earlier operator
    version) is not deleted: the pod becomes its owner, and the garbage collector takes it later."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "statestore-app-legacy", "labels": {LABEL: "legacy"}},
        "data": {},
    }
    kube.apply(cm)
    legacy = bare_pod("legacy", {"statestore.dapr.io/injected": "legacy"})  # left alone by the webhook
    legacy["spec"]["volumes"] = [
        {"name": "statestore-components", "configMap": {"name": "statestore-app-legacy"}}
    ]
    kube.apply(legacy)
    pod = kube.must_get("pod", "legacy")
    assert LABEL not in (pod["metadata"].get("labels") or {})
    wait_for(
        "the unlabelled pod owning its ConfigMap",
        lambda: owners(kube, "statestore-app-legacy") == uids([pod]),
    )
    assert "statestore-app-legacy deleted" not in injecting.output()
    kube.cluster.kubectl("delete", "pod", "legacy", "-n", kube.ns)
    wait_for(
        "the ConfigMap gone with its pod", lambda: kube.get("configmap", "statestore-app-legacy") is None
    )
