"""The operator against a real API server: what a user sees with kubectl."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_testing import (
    IMAGE,
    Kube,
    Operator,
    no_change,
    reconciled,
    reconciles,
    settled,
    start_with_webhook,
    wait_for,
    webhook_configurations,
)

from statestore_sidecar.components import secret_env_var

pytestmark = pytest.mark.k8s


def component(name: str, ctype: str, metadata: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": ctype, "version": "v1", "metadata": metadata, **spec},
    }


def redis(name: str = "cache", **extra: Any) -> dict[str, Any]:
    return component(
        name,
        "state.redis",
        [
            {"name": "redisHost", "value": "redis.example:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
            {"name": "redisDB", "value": 2},
            *extra.get("metadata", []),
        ],
    )


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def test_valid_component_gets_configmap_deployment_service(kube: Kube, operator: Operator) -> None:
    kube.apply(secret("redis-auth", password="s3cret"))
    kube.apply(redis())
    kube.wait_condition("cache", "Validated", "True", "Valid")
    # No pod runs yet: Available and Ready say so, and why.
    kube.wait_condition("cache", "Available", "False", "Progressing")
    kube.wait_condition("cache", "Ready", "False", "Progressing")
    body = kube.must_get("components.dapr.io", "cache")
    uid = body["metadata"]["uid"]
    assert body["status"]["endpoint"] == f"http://statestore-cache.{kube.ns}.svc:3500"
    assert body["status"]["grpcEndpoint"] == f"statestore-cache.{kube.ns}.svc:50001"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]

    cm = kube.must_get("configmap", "statestore-cache")
    deploy = kube.must_get("deployment", "statestore-cache")
    svc = kube.must_get("service", "statestore-cache")
    for obj in (cm, deploy, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "name": "cache",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "statestore-operator"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "cache"
    # The ConfigMap holds the definition, the secretKeyRef untouched and no secret value.
    text = cm["data"]["component.yaml"]
    assert "secretKeyRef" in text and "s3cret" not in text

    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["statestore-sidecar"]
    assert container["args"][:4] == ["--resources-path", "/etc/statestore/components", "--app-id", "cache"]
    env = {e["name"]: e for e in container["env"]}
    assert env[secret_env_var("redis-auth", "password")]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}
    }
    assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1.0/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/statestore/components", "/tmp"}
    assert svc["spec"]["ports"][0]["name"] == "http" and svc["spec"]["ports"][0]["port"] == 3500
    grpc_port = svc["spec"]["ports"][1]
    assert (grpc_port["name"], grpc_port["port"], grpc_port["appProtocol"]) == ("grpc", 50001, "grpc")

    kube.make_pods_ready("cache")
    kube.wait_condition("cache", "Available", "True", "Available")
    kube.wait_condition("cache", "Ready", "True", "Available")
    events = kube.events("cache")
    assert any(e["reason"] == "Valid" and e["type"] == "Normal" for e in events), events


def test_printer_columns(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Ready", "False", "Progressing")
    out = kube.cluster.kubectl("get", "components", "-n", kube.ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "TYPE", "VERSION", "READY", "REASON", "AGE"]
    assert row.split()[:5] == ["mem", "state.in-memory", "v1", "False", "Progressing"]
    kube.make_pods_ready("mem")
    kube.wait_condition("mem", "Ready", "True", "Available")
    row = kube.cluster.kubectl("get", "components", "-n", kube.ns).stdout.splitlines()[1]
    assert row.split()[:5] == ["mem", "state.in-memory", "v1", "True", "Available"]
    wide = kube.cluster.kubectl("get", "components", "-n", kube.ns, "-o", "wide").stdout
    assert f"http://statestore-mem.{kube.ns}.svc:3500" in wide
    # `kubectl get dapr` lists them through the category.
    assert "mem" in kube.cluster.kubectl("get", "dapr", "-n", kube.ns).stdout


INVALID = [
    pytest.param(
        component("bad", "state.nosuch", []), "UnsupportedStoreType", "spec.type", id="unknown-type"
    ),
    pytest.param(
        {
            **component("bad", "state.redis", []),
            "spec": {"type": "state.redis", "version": "v9", "metadata": []},
        },
        "UnsupportedVersion",
        "spec.version",
        id="bad-version",
    ),
    pytest.param(
        component("bad", "state.redis", []), "InvalidMetadata", "'redisHost'", id="missing-required"
    ),
    pytest.param(
        component(
            "bad", "state.redis", [{"name": "redisHost", "value": "h:1"}, {"name": "redisDB", "value": "two"}]
        ),
        "InvalidMetadata",
        "'redisDB'",
        id="wrong-type",
    ),
    pytest.param(
        component(
            "bad",
            "state.redis",
            [
                {"name": "redisHost", "value": "h:1"},
                {"name": "redisPassword", "secretKeyRef": {"name": "nosecret", "key": "password"}},
            ],
        ),
        "SecretNotFound",
        "'nosecret'",
        id="missing-secret",
    ),
    pytest.param(
        component(
            "bad",
            "state.redis",
            [
                {"name": "redisHost", "value": "h:1"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "nokey"}},
            ],
        ),
        "SecretKeyNotFound",
        "'nokey'",
        id="missing-secret-key",
    ),
    pytest.param(
        component(
            "bad", "state.redis", [{"name": "redisHost", "value": "h:1"}, {"name": "REDISHOST", "value": "x"}]
        ),
        "InvalidMetadata",
        "'REDISHOST'",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("manifest", "reason", "names"), INVALID)
def test_invalid_component_is_reported_and_not_deployed(
    kube: Kube, operator: Operator, manifest: dict[str, Any], reason: str, names: str
) -> None:
    kube.apply(secret("redis-auth", password="s3cret"))
    kube.apply(manifest)
    cond = kube.wait_condition("bad", "Validated", "False", reason)
    assert names in cond["message"]
    ready = kube.wait_condition("bad", "Ready", "False", reason)
    assert ready["message"] == cond["message"]
    events = wait_for("a Warning event", lambda: [e for e in kube.events("bad") if e["reason"] == reason])
    assert events[0]["type"] == "Warning" and names in events[0]["message"]
    assert kube.get("deployment", "statestore-bad") is None
    assert kube.get("configmap", "statestore-bad") is None


def test_unknown_key_is_a_warning(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", [{"name": "colour", "value": "blue"}]))
    cond = kube.wait_condition("mem", "Validated", "True", "UnknownMetadata")
    assert "'colour'" in cond["message"]
    events = wait_for(
        "a Warning event", lambda: [e for e in kube.events("mem") if e["reason"] == "UnknownMetadata"]
    )
    assert events[0]["type"] == "Warning"
    kube.must_get("deployment", "statestore-mem")


def test_secret_created_later_is_picked_up(kube: Kube, operator: Operator) -> None:
    kube.apply(redis())
    kube.wait_condition("cache", "Validated", "False", "SecretNotFound")
    kube.apply(secret("redis-auth", password="s3cret"))
    kube.wait_condition("cache", "Validated", "True", "Valid", timeout=20)
    kube.must_get("deployment", "statestore-cache")


def absent(kube: Kube, kind: str, name: str) -> Callable[[], bool]:
    return lambda: kube.get(kind, name) is None


def _template_hash(kube: Kube) -> str:
    deploy = kube.must_get("deployment", "statestore-cache")
    return str(deploy["spec"]["template"]["metadata"]["annotations"]["statestore.dapr.io/config-hash"])


def _metric(operator: Operator, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in operator.metrics().splitlines()
        if line.startswith(name + "{")
    )


def test_spec_change_rolls_and_no_change_writes_nothing(kube: Kube, operator: Operator) -> None:
    kube.apply(secret("redis-auth", password="s3cret"))
    kube.apply(redis())
    kube.wait_condition("cache", "Validated", "True")
    kube.make_pods_ready("cache")
    kube.wait_condition("cache", "Ready", "True")
    first = _template_hash(kube)
    objects = [
        ("components.dapr.io", "cache"),
        ("configmap", "statestore-cache"),
        ("deployment", "statestore-cache"),
        ("service", "statestore-cache"),
    ]

    settled(kube, *objects)
    writes = _metric(operator, "statestore_operator_object_writes_total")
    # Several resync rounds (every 3s here) and a no-op re-apply change nothing.
    with no_change(kube, *objects):
        before = reconciles(operator)
        kube.apply(redis())
        reconciled(operator, 3, since=before)
    assert _metric(operator, "statestore_operator_object_writes_total") == writes
    # A spec change is rolled out with a new pod-template hash.
    kube.apply(redis(metadata=[{"name": "dialTimeout", "value": "2s"}]))
    wait_for("a new pod-template hash", lambda: _template_hash(kube) != first)
    assert "dialTimeout" in kube.must_get("configmap", "statestore-cache")["data"]["component.yaml"]
    body = kube.must_get("components.dapr.io", "cache")
    wait_for(
        "observedGeneration to follow",
        lambda: (
            (kube.get("components.dapr.io", "cache") or {}).get("status", {}).get("observedGeneration")
            == body["metadata"]["generation"]
        ),
    )
    # An invalid edit is reported but not rolled out: the last good pods keep serving.
    good = _template_hash(kube)
    kube.apply(redis(metadata=[{"name": "dialTimeout", "value": "soon"}]))
    kube.wait_condition("cache", "Validated", "False", "InvalidMetadata")
    assert _template_hash(kube) == good


def test_delete_collects_everything(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Validated", "True")
    for kind in ("configmap", "deployment", "service"):
        kube.must_get(kind, "statestore-mem")
    kube.cluster.kubectl("delete", "components.dapr.io", "mem", "-n", kube.ns, "--wait=true", "--timeout=30s")
    for kind in ("configmap", "deployment", "service"):
        wait_for(f"{kind} to be garbage-collected", absent(kube, kind, "statestore-mem"))


def test_other_component_types_are_ignored(kube: Kube, operator: Operator) -> None:
    kube.apply(component("bus", "pubsub.redis", [{"name": "redisHost", "value": "h:1"}]))
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Validated", "True")  # the operator is working (bus came first)...
    reconciled(operator, 2, since=reconciles(operator))  # ...and had resync rounds over both
    assert "status" not in kube.must_get("components.dapr.io", "bus")
    assert kube.get("deployment", "statestore-bus") is None
    assert kube.get("configmap", "statestore-bus") is None
    assert kube.events("bus") == []


def test_restart_changes_nothing(kube: Kube, operator: Operator) -> None:
    kube.apply(secret("redis-auth", password="s3cret"))
    kube.apply(redis())
    kube.apply(component("bad", "state.nosuch", []))
    kube.wait_condition("cache", "Validated", "True")
    kube.wait_condition("bad", "Validated", "False")
    kube.make_pods_ready("cache")
    kube.wait_condition("cache", "Ready", "True")

    objects = [
        ("components.dapr.io", "cache"),
        ("components.dapr.io", "bad"),
        ("configmap", "statestore-cache"),
        ("deployment", "statestore-cache"),
        ("service", "statestore-cache"),
    ]
    settled(kube, *objects)
    events_before = len(kube.events("cache")) + len(kube.events("bad"))
    with no_change(kube, *objects):
        operator.stop()
        operator.start()
        # The new process lists both Components, then resyncs them: twice each at least.
        reconciled(operator, 4, since=0)
    assert len(kube.events("cache")) + len(kube.events("bad")) == events_before
    assert "statestore_operator_reconcile_total" in operator.metrics()


def test_available_follows_the_deployment(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Available", "False", "Progressing")
    kube.make_pods_ready("mem")
    kube.wait_condition("mem", "Ready", "True", "Available")
    # The pod goes away (as on a node failure): availability drops and comes back with a new pod.
    kube.cluster.kubectl(
        "delete", "pods", "-n", kube.ns, "-l", "app.kubernetes.io/instance=mem", "--wait=false"
    )
    kube.wait_condition("mem", "Available", "False", "Progressing")
    kube.wait_condition("mem", "Ready", "False", "Progressing")
    kube.make_pods_ready("mem")
    kube.wait_condition("mem", "Ready", "True", "Available")
    # One Event per transition, not per reconciliation.
    ready_events = [e for e in kube.events("mem") if e["message"].startswith("Ready=")]
    assert [e["message"].split(":")[0] for e in ready_events].count("Ready=True") == 2


def actor(name: str) -> dict[str, Any]:
    return component(name, "state.in-memory", [{"name": "actorStateStore", "value": "true"}])


def test_actor_store_conflict_without_webhook(kube: Kube, operator: Operator) -> None:
    kube.apply(actor("first"))
    kube.wait_condition("first", "Validated", "True")
    kube.apply(actor("second"))
    cond = kube.wait_condition("second", "Ready", "False", "ActorStateStoreConflict")
    assert "'first'" in cond["message"]
    wait_for(
        "the loser to run no pods",
        lambda: (kube.get("deployment", "statestore-second") or {}).get("spec", {}).get("replicas") == 0,
    )
    kube.wait_condition("second", "Available", "False", "ScaledToZero")
    assert (kube.get("deployment", "statestore-first") or {})["spec"]["replicas"] == 1
    # The holder goes: the other one takes over by itself.
    kube.cluster.kubectl("delete", "components.dapr.io", "first", "-n", kube.ns)
    wait_for(
        "the other to be scaled up",
        lambda: (kube.get("deployment", "statestore-second") or {}).get("spec", {}).get("replicas") == 1,
    )
    kube.wait_condition("second", "Ready", "False", "Progressing")
    kube.make_pods_ready("second")
    kube.wait_condition("second", "Ready", "True", "Available")


def test_webhook_rejects_bad_components(kube: Kube, start_operator: Any, tmp_path: Path) -> None:
    _, config = start_with_webhook(kube, start_operator, tmp_path)
    try:
        wait_for(
            "the webhook configuration",
            lambda: "validatingwebhookconfiguration" in webhook_configurations(kube, config),
        )
        kube.apply(actor("first"))
        kube.wait_condition("first", "Validated", "True")
        refused = kube.cluster.kubectl(
            "apply", "-n", kube.ns, "-f", "-", input=json.dumps(actor("second")), check=False
        )
        assert refused.returncode != 0
        assert "'first'" in refused.stderr and "actor state store" in refused.stderr
        assert kube.get("components.dapr.io", "second") is None
        bad = component(
            "bad", "state.redis", [{"name": "redisHost", "value": "h:1"}, {"name": "redisDB", "value": "x"}]
        )
        refused = kube.cluster.kubectl("apply", "-n", kube.ns, "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0 and "'redisDB'" in refused.stderr
        warned = kube.apply(component("mem", "state.in-memory", [{"name": "colour", "value": "blue"}]))
        assert "'colour'" in warned.stderr
        # Other types pass untouched.
        kube.apply(component("bus", "pubsub.redis", []))
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kube.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)


def webhooks_in(kube: Kube, kind: str, name: str) -> list[str]:
    return [hook["name"] for hook in kube.cluster.kubectl_json("get", kind, name).get("webhooks") or []]


def test_graceful_exit_empties_the_webhook_configurations(
    kube: Kube, start_operator: Any, tmp_path: Path
) -> None:
    operator, config = start_with_webhook(kube, start_operator, tmp_path)
    both = ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"]
    bad = component(
        "bad", "state.redis", [{"name": "redisHost", "value": "h:1"}, {"name": "redisDB", "value": "x"}]
    )
    try:
        wait_for("both webhook configurations", lambda: webhook_configurations(kube, config) == both)
        assert webhooks_in(kube, "validatingwebhookconfiguration", config)  # the validating webhook
        refused = kube.cluster.kubectl("apply", "-n", kube.ns, "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0 and "'redisDB'" in refused.stderr
        assert operator.proc is not None
        process = operator.proc
        operator.stop()  # SIGTERM, then waits for the exit
        assert process.returncode == 0, operator.output()[-3000:]
        # Emptied before the process exited: no webhook is left for the API server to call (with
        # failurePolicy Fail, a dead one would refuse every Component).
        assert [webhooks_in(kube, kind, config) for kind in both] == [[], []]
        kube.apply(bad)  # admitted now; the operator would report it when it runs again
    finally:
        for kind in both:
            kube.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)


def test_type_changed_away_from_state_cleans_up(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Validated", "True")
    kube.must_get("deployment", "statestore-mem")
    kube.apply(component("mem", "pubsub.in-memory", []))
    for kind in ("configmap", "deployment", "service"):
        wait_for(f"{kind} to be deleted", absent(kube, kind, "statestore-mem"))
    wait_for("the status to be removed", lambda: "status" not in kube.must_get("components.dapr.io", "mem"))


def test_objects_of_others_are_never_taken_over(kube: Kube, operator: Operator) -> None:
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "statestore-mem"}, "data": {"a": "b"}}
    )
    kube.apply(component("mem", "state.in-memory", []))
    cond = kube.wait_condition("mem", "Available", "False", "NameInUse")
    assert "ConfigMap statestore-mem" in cond["message"]
    kube.wait_condition("mem", "Ready", "False", "NameInUse")
    assert kube.must_get("configmap", "statestore-mem")["data"] == {"a": "b"}
    assert kube.get("deployment", "statestore-mem") is None
    # Once the name is free, the Component is served.
    kube.cluster.kubectl("delete", "configmap", "statestore-mem", "-n", kube.ns)
    kube.wait_condition("mem", "Available", "False", "Progressing")
