"""Pluggable Components through the real control plane: the `dapr.io/component-container` annotation
runs its container beside the state API (one sockets folder, an emptyDir both mount, its env on both),
the condition says the store is pluggable, and a bad annotation is refused at `kubectl apply` by the
webhook or, without it, reported with a condition and an Event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_testing import (
    ROOT,
    Kube,
    Operator,
    injecting_operator,
    no_change,
    reconciled,
    reconciles,
    run_documented,
    settled,
    start_with_webhook,
    wait_for,
)

from fixtures.docs import documented

pytestmark = pytest.mark.k8s

SOCKETS = "/tmp/dapr-components-sockets"
SOCKET_ENV = ("DAPR_COMPONENT_SOCKETS_FOLDER", "DAPR_COMPONENTS_SOCKETS_FOLDER")
MEMSTORE = {
    "name": "memstore",
    "image": "example.test/contrib-pluggable:1",
    "command": ["contrib-pluggable"],
    "args": ["-socket", f"{SOCKETS}/memstore.sock", "-store", "in-memory"],
}


def component(
    name: str, container: dict[str, Any] | str | None, ctype: str = "state.memstore"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if container is not None:
        text = container if isinstance(container, str) else json.dumps(container)
        meta["annotations"] = {"dapr.io/component-container": text}
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": meta,
        "spec": {"type": ctype, "version": "v1", "metadata": [{"name": "anyKey", "value": "any value"}]},
    }


def warnings_of(kube: Kube, name: str, reason: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [e for e in kube.events(name) if e["reason"] == reason]


# (annotation, what the message says)
BAD: list[tuple[str, str]] = [
    ("{not json", "not valid JSON"),
    (json.dumps({"name": "memstore"}), "image is required"),
    (json.dumps({**MEMSTORE, "name": "statestore"}), "is the state API container's"),
    (
        json.dumps({**MEMSTORE, "ports": [{"containerPort": 50001}]}),
        "port 50001 is the state API's 'grpc' port",
    ),
]


def test_the_deployment_runs_the_component_container_beside_the_state_api(
    kube: Kube, operator: Operator
) -> None:
    kube.apply(component("orders", MEMSTORE))
    cond = kube.wait_condition("orders", "Validated", "True", "PluggableComponent")
    assert "state.memstore is a pluggable component served by container 'memstore'" in cond["message"]
    assert "passed to it as given" in cond["message"]
    pod = kube.must_get("deployment", "statestore-orders")["spec"]["template"]["spec"]
    ours, theirs = pod["containers"]
    assert ours["name"] == "statestore"
    assert {k: theirs[k] for k in MEMSTORE} == MEMSTORE
    (socket_volume,) = [v for v in pod["volumes"] if v["name"] == "dapr-components-unix-domain-socket"]
    assert socket_volume["emptyDir"] == {}
    for container in (ours, theirs):
        mounts = [m for m in container["volumeMounts"] if m["name"] == socket_volume["name"]]
        assert [m["mountPath"] for m in mounts] == [SOCKETS]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert all(env[name] == SOCKETS for name in SOCKET_ENV), env
    # The server reads the annotation from its Component file and waits for the socket.
    cm = kube.must_get("configmap", "statestore-orders")
    assert "dapr.io/component-container" in cm["data"]["component.yaml"]

    # A type no store has and no annotation declares is refused as before.
    kube.apply(component("typo", None))
    refused = kube.wait_condition("typo", "Validated", "False", "UnsupportedStoreType")
    assert "unknown state store type 'state.memstore'" in refused["message"]
    assert kube.get("deployment", "statestore-typo") is None


def test_a_bad_annotation_is_reported_with_a_condition_and_an_event(kube: Kube, operator: Operator) -> None:
    for index, (annotation, _) in enumerate(BAD):
        kube.apply(component(f"bad-{index}", annotation))
    for index, (_, detail) in enumerate(BAD):
        name = f"bad-{index}"
        cond = kube.wait_condition(name, "Validated", "False", "InvalidAnnotation")
        assert cond["message"].startswith("annotation 'dapr.io/component-container': ")
        assert detail in cond["message"], cond
        events = wait_for("a Warning event", warnings_of(kube, name, "InvalidAnnotation"))
        assert events[0]["type"] == "Warning" and detail in events[0]["message"]
        assert kube.get("deployment", f"statestore-{name}") is None
    # Fixing the annotation brings the Deployment.
    kube.apply(component("bad-0", MEMSTORE))
    kube.wait_condition("bad-0", "Validated", "True", "PluggableComponent")
    assert len(kube.must_get("deployment", "statestore-bad-0")["spec"]["template"]["spec"]["containers"]) == 2


def test_the_webhook_refuses_a_bad_annotation_at_apply(
    kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path
) -> None:
    _, config = start_with_webhook(kube, start_operator, tmp_path)
    try:
        wait_for(
            "the webhook configuration",
            lambda: (
                kube.cluster.kubectl("get", "validatingwebhookconfiguration", config, check=False).returncode
                == 0
            ),
        )
        for annotation, detail in BAD:
            manifest = component("refused", annotation)
            done = kube.cluster.kubectl(
                "apply", "-n", kube.ns, "-f", "-", input=json.dumps(manifest), check=False
            )
            assert done.returncode != 0, annotation
            assert "annotation 'dapr.io/component-container'" in done.stderr and detail in done.stderr, (
                done.stderr
            )
            assert kube.get("components.dapr.io", "refused") is None
        kube.apply(component("admitted", MEMSTORE))
        kube.wait_condition("admitted", "Validated", "True", "PluggableComponent")
    finally:
        kube.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", config, "--ignore-not-found", check=False
        )


def test_sidecar_mode_injects_the_component_container_when_the_pod_asks(
    kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path
) -> None:
    with injecting_operator(kube, start_operator, tmp_path):
        kube.apply(component("orders", MEMSTORE))
        kube.wait_condition("orders", "Validated", "True", "PluggableComponent")
        inject = {"statestore.dapr.io/inject": "true", "statestore.dapr.io/app-id": "web"}
        kube.apply(app_pod("web", {**inject, "dapr.io/inject-pluggable-components": "true"}))
        body = kube.must_get("pod", "web")
        (sidecar,) = [c for c in body["spec"]["initContainers"] if c["name"] == "statestore"]
        app, plug = body["spec"]["containers"]
        assert app["name"] == "app" and {k: plug[k] for k in MEMSTORE} == MEMSTORE
        for container in (sidecar, plug):
            mounts = [
                m["mountPath"]
                for m in container["volumeMounts"]
                if m["name"] == "dapr-components-unix-domain-socket"
            ]
            assert mounts == [SOCKETS]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert all(env[name] == SOCKETS for name in SOCKET_ENV), env
        cm = kube.must_get("configmap", "statestore-app-web")
        assert "dapr.io/component-container" in cm["data"]["orders.yaml"]
        # Without Dapr's annotation the pod gets no component container, and a warning says so.
        applied = kube.apply(app_pod("other", {**inject, "statestore.dapr.io/app-id": "other"}))
        assert "pluggable Component 'orders' has no container in this pod" in applied.stderr, applied.stderr
        assert [c["name"] for c in kube.must_get("pod", "other")["spec"]["containers"]] == ["app"]


def app_pod(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "example.test/app:1"}]},
    }


# --- docs/operator.md, "Pluggable state stores" ---------------------------------------------------


def test_the_documented_component_and_commands(kube: Kube, operator: Operator, tmp_path: Path) -> None:
    kube.apply(documented("operator.md", "pluggable-component"))
    kube.wait_condition("carts", "Validated", "True", "PluggableComponent")
    out = run_documented(kube, tmp_path, documented("operator.md", "pluggable-check"))
    # What the docs say it prints (kubectl adds no newline after a jsonpath).
    assert out == "statestore memstorePluggableComponent"
    doc = (ROOT / "docs" / "operator.md").read_text()
    assert "prints `statestore memstore` and `PluggableComponent`" in doc
    pod = kube.must_get("deployment", "statestore-carts")["spec"]["template"]["spec"]
    plug = pod["containers"][1]
    assert plug["args"] == ["-socket", f"{SOCKETS}/memstore.sock"]
    validated = kube.conditions("carts")["Validated"]
    assert "'registry.example.com/memstore:1.0'" in validated["message"]


def test_a_container_written_loosely_is_not_rewritten_on_every_resync(kube: Kube, operator: Operator) -> None:
    """Values the API server drops (empty strings and lists, false of plain booleans) or writes in
    canonical form (quantities) do not make the operator see a difference every round."""
    loose = {
        **MEMSTORE,
        "workingDir": "",
        "command": [],
        "env": [{"name": "EMPTY", "value": ""}, {"name": "SET", "value": "1"}],
        "stdin": False,
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": False}],
        "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}},
        "securityContext": {"readOnlyRootFilesystem": False},
    }
    kube.apply(component("loose", loose))
    kube.wait_condition("loose", "Validated", "True", "PluggableComponent")
    objects = [("deployment", "statestore-loose"), ("configmap", "statestore-loose")]
    kube.must_get(*objects[0])
    settled(kube, *objects)
    writes = object_writes(operator)
    with no_change(kube, *objects):
        reconciled(operator, 3, since=reconciles(operator))
    assert object_writes(operator) == writes
    plug = kube.must_get("deployment", "statestore-loose")["spec"]["template"]["spec"]["containers"][1]
    assert plug["securityContext"] == {"readOnlyRootFilesystem": False}  # a meaningful false is kept
    assert {"name": "SET", "value": "1"} in plug["env"]


def object_writes(operator: Operator) -> float:
    name = "statestore_operator_object_writes_total{"
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in operator.metrics().splitlines() if line.startswith(name)
    )
