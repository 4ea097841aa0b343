"""The operator against a real API server: what a user sees with kubectl."""

from __future__ import annotations

from typing import Any

import pytest
from operator_testing import IMAGE, Kube, Operator

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
    body = kube.must_get("components.dapr.io", "cache")
    uid = body["metadata"]["uid"]
    assert body["status"]["endpoint"] == f"http://statestore-cache.{kube.ns}.svc:3500"
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

    # No pod runs yet: Available and Ready say so, and why.
    kube.wait_condition("cache", "Available", "False", "Progressing")
    kube.wait_condition("cache", "Ready", "False", "Progressing")
    kube.make_pods_ready("cache")
    kube.wait_condition("cache", "Available", "True", "Available")
    kube.wait_condition("cache", "Ready", "True", "Available")
    events = kube.events("cache")
    assert any(e["reason"] == "Valid" and e["type"] == "Normal" for e in events), events


def test_printer_columns(kube: Kube, operator: Operator) -> None:
    kube.apply(component("mem", "state.in-memory", []))
    kube.wait_condition("mem", "Validated", "True")
    out = kube.cluster.kubectl("get", "components", "-n", kube.ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "TYPE", "VERSION", "READY", "REASON", "AGE"]
    assert row.split()[:5] == ["mem", "state.in-memory", "v1", "False", "Progressing"]
    wide = kube.cluster.kubectl("get", "components", "-n", kube.ns, "-o", "wide").stdout
    assert f"http://statestore-mem.{kube.ns}.svc:3500" in wide
    # `kubectl get dapr` lists them through the category.
    assert "mem" in kube.cluster.kubectl("get", "dapr", "-n", kube.ns).stdout
