"""Sidecar mode against the real control plane: Pods and Deployments applied with kubectl come back with
the `statestore` sidecar (or untouched), and the injected container really serves the SDK on the
loopback ports the application's env names."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dapr.clients import DaprClient
from operator_testing import Kube, Operator, container_env, injecting_operator, wait_for, without

from fixtures.docs import documented
from fixtures.sdk import sdk_settings
from fixtures.sidecar import BIN, free_port
from statestore_testing.volumes import project

pytestmark = pytest.mark.k8s


def component(name: str, scopes: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
        **({"scopes": scopes} if scopes else {}),
    }


def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "containers": [
                {"name": "app", "image": "example.test/app:1", "env": [{"name": "MODE", "value": "x"}]}
            ]
        },
    }


INJECT = {"statestore.dapr.io/inject": "true"}


@pytest.fixture
def injecting(kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path) -> Iterator[Operator]:
    """The operator with its webhooks (Components and Pods), the container kind chosen by version."""
    with injecting_operator(kube, start_operator, tmp_path) as op:
        yield op


def sidecar_of(body: dict[str, Any]) -> Any:
    (sidecar,) = [c for c in body["spec"].get("initContainers") or [] if c["name"] == "statestore"]
    return sidecar


def test_annotated_pods_get_the_sidecar_others_are_untouched(kube: Kube, injecting: Operator) -> None:
    for c in (component("everyone"), component("mine", ["web"]), component("theirs", ["other"])):
        kube.apply(c)
    kube.apply(pod("web", {**INJECT, "statestore.dapr.io/app-id": "web"}))
    body = kube.must_get("pod", "web")
    sidecar = sidecar_of(body)
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: starts before, stops after the app
    # Chosen from the API server's version (discovery): the test control plane is recent.
    assert re.search(r"sidecar injection on: native sidecars \(API server v1\.\d+", injecting.output())
    assert sidecar["command"] == ["statestore-sidecar"]
    args = sidecar["args"]
    assert args[args.index("--app-id") + 1] == "web"
    assert {p["containerPort"] for p in sidecar["ports"]} == {3500, 50001, 9090}
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/v1.0/healthz"
    (app,) = body["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env == {"MODE": "x", "DAPR_HTTP_PORT": "3500", "DAPR_GRPC_PORT": "50001"}
    volumes = {v["name"]: v for v in body["spec"]["volumes"]}
    assert volumes["statestore-components"]["configMap"]["name"] == "statestore-app-web"
    assert body["metadata"]["annotations"]["statestore.dapr.io/injected"] == "web"
    # Scoping: the app's ConfigMap holds the unscoped Component and the one scoped to it.
    cm = kube.must_get("configmap", "statestore-app-web")
    assert sorted(cm["data"]) == ["everyone.yaml", "mine.yaml"]
    # A new Component scoped to the app reaches its ConfigMap (and so the running sidecar's files).
    kube.apply(component("later", ["web"]))
    wait_for(
        "the new Component in the app's ConfigMap",
        lambda: "later.yaml" in (kube.get("configmap", "statestore-app-web") or {}).get("data", {}),
    )
    # Untouched: no annotation; Dapr's own injector's pods; pods that already have a statestore container.
    kube.apply(pod("plain"))
    kube.apply(pod("dapr", {**INJECT, "dapr.io/enabled": "true"}))
    already = pod("already", INJECT)
    already["spec"]["containers"].append({"name": "statestore", "image": "example.test/own:1"})
    kube.apply(already)
    for name in ("plain", "dapr", "already"):
        got = kube.must_get("pod", name)
        assert "initContainers" not in got["spec"], name
        assert "statestore.dapr.io/injected" not in (got["metadata"].get("annotations") or {}), name
        assert all(
            "DAPR_HTTP_PORT" not in {e["name"] for e in c.get("env") or []} for c in got["spec"]["containers"]
        )
    assert [c["name"] for c in kube.must_get("pod", "already")["spec"]["containers"]] == ["app", "statestore"]


def test_idempotent_on_an_injected_pod(kube: Kube, injecting: Operator) -> None:
    kube.apply(pod("once", {**INJECT, "statestore.dapr.io/app-id": "once"}))
    injected = kube.must_get("pod", "once")
    # The same spec created again (e.g. a pod manifest exported from the cluster) is left as it is.
    again = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "twice", "annotations": injected["metadata"]["annotations"]},
        "spec": {k: injected["spec"][k] for k in ("containers", "initContainers", "volumes")},
    }
    kube.apply(again)
    twice = kube.must_get("pod", "twice")
    assert [c["name"] for c in twice["spec"]["initContainers"]] == ["statestore"]
    assert [c["name"] for c in twice["spec"]["containers"]] == ["app"]
    assert [e["name"] for e in twice["spec"]["containers"][0]["env"]].count("DAPR_HTTP_PORT") == 1
    assert [v["name"] for v in twice["spec"]["volumes"]] == [v["name"] for v in injected["spec"]["volumes"]]


def test_named_stores_warn_when_missing(kube: Kube, injecting: Operator) -> None:
    kube.apply(component("orders"))
    applied = kube.apply(pod("named", {**INJECT, "statestore.dapr.io/stores": "orders,nosuch"}))
    assert "'nosuch' does not exist" in applied.stderr, applied.stderr
    body = kube.must_get("pod", "named")
    name = next(v for v in body["spec"]["volumes"] if v["name"] == "statestore-components")["configMap"][
        "name"
    ]
    assert sorted(kube.must_get("configmap", name)["data"]) == ["orders.yaml"]
    bad = kube.cluster.kubectl(
        "apply",
        "-n",
        kube.ns,
        "-f",
        "-",
        input=json.dumps(pod("bad", {**INJECT, "statestore.dapr.io/http-port": "x"})),
        check=False,
    )
    assert bad.returncode != 0 and "not a port number" in bad.stderr


def test_documented_deployment_pods_take_the_workload_name_as_app_id(kube: Kube, injecting: Operator) -> None:
    kube.apply(component("carts", ["shop"]))
    manifest = documented("operator.md", "sidecar-deployment")
    kube.apply(manifest)

    def shop_pod() -> dict[str, Any] | None:
        items = kube.cluster.kubectl_json("get", "pods", "-n", kube.ns, "-l", "app=shop").get("items") or []
        return items[0] if items else None

    body = wait_for("the Deployment's pod", shop_pod)
    args = sidecar_of(body)["args"]
    assert args[args.index("--app-id") + 1] == "shop"
    assert sorted(kube.must_get("configmap", "statestore-app-shop")["data"]) == ["carts.yaml"]


def test_ordinary_container_when_forced(
    kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path
) -> None:
    """`--inject-sidecar-kind ordinary`: the container of API servers before 1.29, on a real one."""
    kube.cluster.kubectl("create", "secret", "generic", "redis", "-n", kube.ns, "--from-literal=pw=s3cret")
    kube.cluster.kubectl("create", "secret", "generic", "tok", "-n", kube.ns, "--from-literal=token=t")
    files = component("files", ["web"])
    files["spec"] = {
        "type": "state.sqlite",
        "version": "v1",
        "metadata": [{"name": "connectionString", "value": "d.db"}],
    }
    cache = component("cache")
    cache["spec"] = {
        "type": "state.redis",
        "version": "v1",
        "metadata": [
            {"name": "redisHost", "value": "redis:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "pw"}},
        ],
    }
    annotations = {**INJECT, "statestore.dapr.io/app-id": "web", "statestore.dapr.io/api-token-secret": "tok"}
    with injecting_operator(kube, start_operator, tmp_path, "--inject-sidecar-kind", "ordinary") as op:
        assert (
            "sidecar injection on: ordinary sidecars (forced by --inject-sidecar-kind=ordinary)"
            in op.output()
        )
        kube.apply(files)
        kube.apply(cache)
        two = pod("web", annotations)
        two["spec"]["containers"].append({"name": "worker", "image": "example.test/worker:1"})
        kube.apply(two)
        body = kube.must_get("pod", "web")
        # Appended after the app's containers, as Dapr's injector appends daprd: the app stays the
        # pod's first (default) container for kubectl logs/exec.
        assert "initContainers" not in body["spec"]
        assert [c["name"] for c in body["spec"]["containers"]] == ["app", "worker", "statestore"]
        sidecar = body["spec"]["containers"][2]
        assert "restartPolicy" not in sidecar
        assert sidecar["command"] == ["statestore-sidecar"]
        args = sidecar["args"]
        assert args[args.index("--app-id") + 1] == "web"
        ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
        assert ports == {"statestore-http": 3500, "statestore-grpc": 50001, "statestore-mtr": 9090}
        assert sidecar["readinessProbe"]["httpGet"] == {
            "path": "/v1.0/healthz",
            "port": "statestore-http",
            "scheme": "HTTP",
        }
        assert sidecar["livenessProbe"]["httpGet"]["port"] == "statestore-http"
        security = sidecar["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["capabilities"] == {"drop": ["ALL"]}
        assert (security["runAsUser"], security["runAsNonRoot"]) == (65532, True)
        env = {e["name"]: e.get("valueFrom") for e in sidecar["env"]}
        assert env["NAMESPACE"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
        assert {"secretKeyRef": {"name": "redis", "key": "pw"}} in env.values()
        assert env["DAPR_API_TOKEN"] == {"secretKeyRef": {"name": "tok", "key": "token"}}
        mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
        volumes = {v["name"]: v for v in body["spec"]["volumes"]}
        assert set(mounts) == {"statestore-components", "statestore-tmp", "statestore-data"} <= set(volumes)
        assert volumes["statestore-components"]["configMap"]["name"] == "statestore-app-web"
        assert sidecar["workingDir"] == mounts["statestore-data"]
        for app in body["spec"]["containers"][:2]:  # every app container finds the sidecar
            app_env = {e["name"]: e.get("value") for e in app.get("env") or []}
            assert (app_env["DAPR_HTTP_PORT"], app_env["DAPR_GRPC_PORT"]) == ("3500", "50001")
            assert "DAPR_API_TOKEN" in app_env
        assert sorted(kube.must_get("configmap", "statestore-app-web")["data"]) == [
            "cache.yaml",
            "files.yaml",
        ]
        # Idempotent in this mode too: the injected spec created again is left as it is.
        again = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "again", "annotations": body["metadata"]["annotations"]},
            "spec": {k: body["spec"][k] for k in ("containers", "volumes")},
        }
        kube.apply(again)
        twice = kube.must_get("pod", "again")
        assert [c["name"] for c in twice["spec"]["containers"]] == ["app", "worker", "statestore"]
        assert "initContainers" not in twice["spec"]
        for app in twice["spec"]["containers"][:2]:
            assert [e["name"] for e in app["env"]].count("DAPR_HTTP_PORT") == 1
        assert [v["name"] for v in twice["spec"]["volumes"]] == [v["name"] for v in body["spec"]["volumes"]]


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], cwd: Path, http_port: int) -> Iterator[None]:
    proc = subprocess.Popen([str(BIN / "statestore-sidecar"), *args], env={**os.environ, **env}, cwd=cwd)
    try:

        def ready() -> bool:
            assert proc.poll() is None, "statestore-sidecar exited"
            try:
                return httpx.get(f"http://127.0.0.1:{http_port}/v1.0/healthz", timeout=2).status_code == 204
            except httpx.TransportError:
                return False

        wait_for("the injected sidecar", ready)
        yield
    finally:
        proc.terminate()
        proc.wait(15)


def test_injected_container_serves_the_sdk_on_the_loopback_ports(
    kube: Kube, injecting: Operator, tmp_path: Path
) -> None:
    kube.apply(component("orders", ["web"]))
    kube.apply(component("elsewhere", ["other"]))
    http_port, grpc_port = free_port(), free_port()  # stand-ins for 3500/50001 in the pod's own network
    annotations = {
        **INJECT,
        "statestore.dapr.io/app-id": "web",
        "statestore.dapr.io/http-port": str(http_port),
        "statestore.dapr.io/grpc-port": str(grpc_port),
    }
    kube.apply(pod("web", annotations))
    body = kube.must_get("pod", "web")
    sidecar = sidecar_of(body)
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == "statestore-components"]
    (volume,) = [v for v in body["spec"]["volumes"] if v["name"] == "statestore-components"]
    folder = tmp_path / "components"
    config = volume["configMap"]["name"]
    project(folder, kube.must_get("configmap", config)["data"])  # as the kubelet mounts it
    args = [folder.as_posix() if a == mount["mountPath"] else a for a in sidecar["args"]]
    args = [*without(args, "--metrics-port"), "--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1"]
    app_env = {e["name"]: e["value"] for e in body["spec"]["containers"][0]["env"]}
    with running(args, container_env(kube, sidecar["env"]), tmp_path, http_port):
        # The SDK as the application runs it: only DAPR_HTTP_PORT and DAPR_GRPC_PORT from its env.
        wanted = {
            "DAPR_HTTP_PORT": int(app_env["DAPR_HTTP_PORT"]),
            "DAPR_GRPC_PORT": int(app_env["DAPR_GRPC_PORT"]),
            "DAPR_RUNTIME_HOST": "127.0.0.1",
            "DAPR_HTTP_ENDPOINT": None,
            "DAPR_GRPC_ENDPOINT": None,
            "DAPR_HEALTH_TIMEOUT": 30,
        }
        with sdk_settings(**wanted), DaprClient() as client:
            client.save_state("orders", "o-1", json.dumps({"qty": 3}))
            assert json.loads(client.get_state("orders", "o-1").data) == {"qty": 3}
            assert [c.name for c in client.get_metadata().registered_components] == ["orders"]
            assert client.get_metadata().application_id == "web"
            # A Component scoped to the app later: its ConfigMap is rendered again, the kubelet
            # updates the mounted files, and the running sidecar serves it without a restart.
            kube.apply(component("later", ["web"]))
            data = wait_for(
                "the new Component in the ConfigMap",
                lambda: d if "later.yaml" in (d := kube.must_get("configmap", config)["data"]) else None,
            )
            project(folder, data)
            wait_for(
                "the sidecar serving the new store",
                lambda: len(client.get_metadata().registered_components) == 2,
            )
            client.save_state("later", "l-1", "v")
            assert client.get_state("later", "l-1").data == b"v"
            assert json.loads(client.get_state("orders", "o-1").data) == {"qty": 3}  # untouched
