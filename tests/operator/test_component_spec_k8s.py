"""The rest of Dapr's Component spec through the operator: ignoreErrors, initTimeout, auth.secretStore,
envRef, and metadata items that mix `value` with `secretKeyRef`. What the server does with the rendered
pod is shown by running the pod's command, env and ConfigMap as a local process."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_testing import Kube, Operator, container_env, wait_for, without

from fixtures.sidecar import sidecar

pytestmark = pytest.mark.k8s


def component(name: str, ctype: str, metadata: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    spec = {"type": ctype, "version": "v1", "metadata": metadata, **extra.pop("spec", {})}
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": spec,
        **extra,
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


@contextmanager
def run_rendered_pod(kube: Kube, name: str, tmp_path: Path) -> Iterator[str]:
    """The Component's Deployment, run locally as the kubelet would run its container."""
    deploy = kube.must_get("deployment", f"statestore-{name}")
    cm = kube.must_get("configmap", f"statestore-{name}")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "components"]
    folder = tmp_path / "components"
    folder.mkdir()
    for key, text in cm["data"].items():
        (folder / key).write_text(text)
    args = [folder.as_posix() if a == mount["mountPath"] else a for a in container["args"]]
    # A pod has its own network; here the helper picks free ports (50001 may be another server's).
    args = without(args, "--dapr-http-port", "--dapr-grpc-port", "--metrics-port")
    with sidecar(args, container_env(kube, container["env"]), cwd=tmp_path) as url:
        yield url


def test_ignore_errors_pods_start_without_the_store_and_the_condition_says_so(
    kube: Kube, operator: Operator, tmp_path: Path
) -> None:
    spec = {"ignoreErrors": True, "initTimeout": "1s"}
    kube.apply(component("flaky", "state.redis", [{"name": "redisHost", "value": "127.0.0.1:1"}], spec=spec))
    kube.wait_condition("flaky", "Validated", "True")
    assert "ignoreErrors: true" in kube.must_get("configmap", "statestore-flaky")["data"]["component.yaml"]
    kube.make_pods_ready("flaky")
    ready = kube.wait_condition("flaky", "Ready", "True", "Available")
    assert "spec.ignoreErrors is true" in ready["message"]
    # What a tool following Dapr's proposed Component status does (docs/operator.md).
    kube.cluster.kubectl(
        "wait", "--for=condition=Ready", "components.dapr.io/flaky", "-n", kube.ns, "--timeout=30s"
    )
    # The rendered pod does become Ready (healthz 204) although Redis is unreachable, without the store.
    with run_rendered_pod(kube, "flaky", tmp_path) as url:
        # Its only store left out: daprd's answer for a server without state stores.
        got = httpx.get(f"{url}/v1.0/state/flaky/k")
        assert got.status_code == 500 and got.json()["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"


def test_init_timeout_is_passed_on_and_a_bad_one_is_refused(kube: Kube, operator: Operator) -> None:
    kube.apply(component("t", "state.in-memory", []))
    kube.wait_condition("t", "Validated", "True", "Valid")
    kube.apply(component("t", "state.in-memory", [], spec={"initTimeout": "30s"}))
    wait_for(
        "the new spec in the ConfigMap",
        lambda: "initTimeout: 30s" in kube.must_get("configmap", "statestore-t")["data"]["component.yaml"],
    )
    # Every condition says which generation it was decided for.
    generation = kube.must_get("components.dapr.io", "t")["metadata"]["generation"]
    assert generation == 2
    wait_for(
        "every condition at generation 2",
        lambda: {c["observedGeneration"] for c in kube.conditions("t").values()} == {2},
    )
    kube.apply(component("bad", "state.in-memory", [], spec={"initTimeout": "soon"}))
    cond = kube.wait_condition("bad", "Validated", "False", "InvalidSpec")
    assert "spec.initTimeout" in cond["message"] and "'soon'" in cond["message"]


def test_other_secret_store_is_refused_by_name(kube: Kube, operator: Operator) -> None:
    metadata: list[dict[str, Any]] = [
        {"name": "redisHost", "value": "h:6379"},
        {"name": "redisPassword", "secretKeyRef": {"name": "pw"}},
    ]
    kube.apply(component("vaulted", "state.redis", metadata, auth={"secretStore": "vault"}))
    cond = kube.wait_condition("vaulted", "Validated", "False", "UnsupportedSecretStore")
    assert "'vault'" in cond["message"]
    assert kube.get("deployment", "statestore-vaulted") is None
    kube.apply(component("k8s", "state.redis", metadata, auth={"secretStore": "kubernetes"}))
    kube.wait_condition("k8s", "Validated", "False", "SecretNotFound")  # kubernetes: the Secret is looked up


def test_env_ref_and_mixed_items_behave_as_in_dapr(kube: Kube, operator: Operator, tmp_path: Path) -> None:
    kube.apply(secret("s", url="state.db", table="from_secret"))
    metadata: list[dict[str, Any]] = [
        {"name": "connectionString", "secretKeyRef": {"name": "s", "key": "url"}},
        # The Secret's value replaces the literal one...
        {"name": "tableName", "value": "from_value", "secretKeyRef": {"name": "s", "key": "table"}},
        # ...a missing key keeps the literal (no SecretKeyNotFound)...
        {
            "name": "metadataTableName",
            "value": "meta_literal",
            "secretKeyRef": {"name": "s", "key": "absent"},
        },
        # ...and an envRef is read from the server's environment when there is no value.
        {"name": "keyPrefix", "envRef": "NAMESPACE"},
    ]
    kube.apply(component("db", "state.sqlite", metadata))
    kube.wait_condition("db", "Validated", "True", "Valid")
    deploy = kube.must_get("deployment", "statestore-db")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STATESTORE_SECRET_S__TABLE"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "optional" not in env["STATESTORE_SECRET_S__URL"]["valueFrom"]["secretKeyRef"]
    assert "envRef: NAMESPACE" in kube.must_get("configmap", "statestore-db")["data"]["component.yaml"]
    with run_rendered_pod(kube, "db", tmp_path) as url:
        assert httpx.post(f"{url}/v1.0/state/db", json=[{"key": "k", "value": 1}]).status_code == 204
    with sqlite3.connect(tmp_path / "state.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = [row[0] for row in conn.execute('SELECT key FROM "from_secret"')]
    assert {"from_secret", "meta_literal"} <= tables and "from_value" not in tables
    assert keys == [f"{kube.ns}||k"]  # keyPrefix: the pod's NAMESPACE variable
    # A missing Secret is still an error, as for Dapr's operator.
    mixed: list[dict[str, Any]] = [
        {"name": "keyPrefix", "value": "name", "secretKeyRef": {"name": "nope", "key": "k"}}
    ]
    kube.apply(component("nosecret", "state.in-memory", mixed))
    kube.wait_condition("nosecret", "Validated", "False", "SecretNotFound")
