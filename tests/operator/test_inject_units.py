"""Sidecar mode's pure decisions: which pods, which app id, which stores, and the injected spec."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from statestore_operator import inject, render
from statestore_operator.validation import check

PODS = render.PodSettings(image="img:1")


def component(
    name: str, ctype: str = "state.in-memory", scopes: list[str] | None = None, **meta: str
) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {
            "type": ctype,
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in meta.items()],
        },
        **({"scopes": scopes} if scopes else {}),
    }


def pod(annotations: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "annotations": {"statestore.dapr.io/inject": "true", **(annotations or {})},
            **meta,
        },
        "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]},
    }


def test_skips() -> None:
    assert inject.skip_reason(pod(), "ns") is None
    assert inject.skip_reason({"metadata": {}, "spec": {}}, "ns") == "not annotated"
    assert inject.skip_reason(pod({"statestore.dapr.io/inject": "false"}), "ns") == "not annotated"
    assert "system" in str(inject.skip_reason(pod(), "kube-system"))
    assert "Dapr" in str(inject.skip_reason(pod({"dapr.io/enabled": "true"}), "ns"))
    daprd = pod()
    daprd["spec"]["containers"].append({"name": "daprd"})
    assert "Dapr" in str(inject.skip_reason(daprd, "ns"))
    injected = inject.mutate(pod(), "ns", inject.request(pod()), inject.select([], "web"), PODS, native=True)
    assert inject.skip_reason(injected, "ns") == "already injected"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"name": "web"}, "web"),
        ({"name": "", "generateName": "worker-"}, "worker"),
        (
            {
                "generateName": "shop-7d9f8b6c5-",
                "labels": {"pod-template-hash": "7d9f8b6c5"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "shop-7d9f8b6c5", "controller": True}],
            },
            "shop",
        ),
        ({"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]}, "db"),
    ],
)
def test_app_id_from_the_owning_workload(meta: dict[str, Any], expected: str) -> None:
    body = pod()
    body["metadata"] = {**body["metadata"], **meta}
    assert inject.request(body).app_id == expected


def test_annotations_choose_app_id_ports_stores_and_token() -> None:
    req = inject.request(
        pod(
            {
                "statestore.dapr.io/app-id": "cart",
                "statestore.dapr.io/http-port": "3600",
                "statestore.dapr.io/grpc-port": "50002",
                "statestore.dapr.io/metrics-port": "9191",
                "statestore.dapr.io/stores": "b, a",
                "statestore.dapr.io/api-token-secret": "tok/value",
            }
        )
    )
    assert (req.app_id, req.http_port, req.grpc_port, req.stores) == ("cart", 3600, 50002, ("a", "b"))
    assert req.metrics_port == 9191
    container, _ = inject.sidecar_container("ns", req, inject.select([], "cart"), PODS, native=True)
    assert {p["containerPort"] for p in container["ports"]} == {3600, 50002, 9191}
    args = container["args"]
    assert [args[args.index(f) + 1] for f in ("--dapr-http-port", "--dapr-grpc-port", "--metrics-port")] == [
        "3600",
        "50002",
        "9191",
    ]
    assert req.token is not None and (req.token.secret, req.token.key) == ("tok", "value")


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"statestore.dapr.io/http-port": "http"}, "not a port number"),
        ({"statestore.dapr.io/grpc-port": "3500"}, "three different ports"),
        ({"statestore.dapr.io/metrics-port": "50001"}, "three different ports"),
        ({"statestore.dapr.io/app-id": "not an id!"}, "not a valid label value"),
        ({"statestore.dapr.io/api-token-secret": "Bad_Name"}, "api-token-secret"),
    ],
)
def test_bad_annotations_are_refused(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(inject.InjectError, match=message):
        inject.request(pod(annotations))


def test_scopes_and_named_stores() -> None:
    everyone = component("everyone")
    mine = component("mine", scopes=["web"])
    theirs = component("theirs", scopes=["other"])
    invalid = component("broken", "state.nope")
    pubsub = {**component("bus"), "spec": {"type": "pubsub.redis", "version": "v1"}}
    all_ = [everyone, mine, theirs, invalid, pubsub]
    assert [c["metadata"]["name"] for c in inject.select(all_, "web").components] == ["everyone", "mine"]
    named = inject.select(all_, "web", ["mine", "missing", "theirs"])
    assert [c["metadata"]["name"] for c in named.components] == ["mine"]
    assert named.missing == ("missing",)
    assert any("'missing' does not exist" in w for w in named.warnings)
    assert any("'theirs' is not scoped to 'web'" in w for w in named.warnings)


def test_config_map_holds_the_selected_components_without_scopes() -> None:
    req = inject.request(pod())
    cm = inject.config_map("ns", req, inject.select([component("mine", scopes=["web"])], "web"))
    assert cm["metadata"]["name"] == "statestore-app-web"
    assert cm["metadata"]["labels"][inject.APP_ID_LABEL] == "web"
    doc = yaml.safe_load(cm["data"]["mine.yaml"])
    assert doc["metadata"]["name"] == "mine" and "scopes" not in doc
    assert inject.request_of_config_map(cm).app_id == "web"
    named = inject.request(pod({"statestore.dapr.io/stores": "mine"}))
    assert inject.config_map_name("web", named.stores) != cm["metadata"]["name"]


def test_mutation_reuses_the_rendered_container() -> None:
    store = component("files", "state.sqlite", connectionString="data.db")
    secret = component("cache", "state.redis", redisHost="redis:6379")
    secret["spec"]["metadata"].append(
        {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "pw"}}
    )
    req = inject.request(pod({"statestore.dapr.io/api-token-secret": "tok"}))
    before = pod({"statestore.dapr.io/api-token-secret": "tok"})
    out = inject.mutate(before, "ns", req, inject.select([store, secret], "web"), PODS, native=True)
    assert before["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # input untouched
    (sidecar,) = out["spec"]["initContainers"]
    parsed = check(store, None).component
    assert parsed is not None
    rendered = render.deployment(store, parsed, PODS)
    reference = rendered["spec"]["template"]["spec"]["containers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert (sidecar["image"], sidecar["command"], sidecar["resources"]) == (
        reference["image"],
        reference["command"],
        reference["resources"],
    )
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["runAsUser"] == 65532
    assert sidecar["args"][sidecar["args"].index("--app-id") + 1] == "web"
    assert sidecar["readinessProbe"]["httpGet"]["port"] == "statestore-http"
    env = {e["name"]: e for e in sidecar["env"]}
    assert any(
        e.get("valueFrom", {}).get("secretKeyRef") == {"name": "redis", "key": "pw"} for e in sidecar["env"]
    )
    assert env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "tok", "key": "token"}
    assert sidecar["workingDir"] == render.DATA_DIR
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["statestore-components"]["configMap"] == {"name": "statestore-app-web"}
    assert {"statestore-tmp", "statestore-data"} <= set(volumes)
    (app,) = out["spec"]["containers"]
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    assert app_env["DAPR_HTTP_PORT"] == "3500" and app_env["DAPR_GRPC_PORT"] == "50001"
    assert "DAPR_API_TOKEN" in app_env
    assert out["metadata"]["annotations"][inject.INJECTED_ANNOTATION] == "web"


def test_ordinary_container_without_native_sidecars() -> None:
    out = inject.mutate(pod(), "ns", inject.request(pod()), inject.select([], "web"), PODS, native=False)
    assert "initContainers" not in out["spec"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "statestore"]
    assert "restartPolicy" not in out["spec"]["containers"][1]


@pytest.mark.parametrize(
    ("version", "native"),
    [
        ({"major": "1", "minor": "28", "gitVersion": "v1.28.15"}, False),  # SidecarContainers alpha, off
        ({"major": "1", "minor": "29", "gitVersion": "v1.29.0"}, True),  # beta, on by default
        ({"major": "1", "minor": "29+", "gitVersion": "v1.29.4-eks-1"}, True),  # a provider's suffix
        ({"major": "1", "minor": "33"}, True),  # GA
        ({"major": "1", "minor": "37"}, True),
        ({"major": "2", "minor": "0"}, True),
        ({"major": "1", "minor": "27"}, False),
        ({"major": "", "minor": "", "gitVersion": "v1.30.1+k3s1"}, True),  # blank fields: gitVersion
        ({"major": "", "minor": "", "gitVersion": "v1.28.2"}, False),
        ({}, False),  # unknown: the ordinary container works everywhere
    ],
)
def test_native_sidecar_support_by_version(version: dict[str, str], native: bool) -> None:
    assert inject.supports_native_sidecars(version) is native


def test_sidecar_kind_choice() -> None:
    recent = {"major": "1", "minor": "31", "gitVersion": "v1.31.2"}
    old = {"major": "1", "minor": "28", "gitVersion": "v1.28.9"}
    assert inject.native_sidecars("auto", recent) == (True, "API server v1.31.2")
    assert inject.native_sidecars("auto", old) == (False, "API server v1.28.9")
    assert inject.native_sidecars("auto", None) == (False, "the API server's version is unknown")
    assert inject.native_sidecars("ordinary", recent)[0] is False
    assert inject.native_sidecars("native", old)[0] is True
    with pytest.raises(ValueError, match="not one of auto, native, ordinary"):
        inject.native_sidecars("sometimes", recent)


def test_injected_pods_are_labelled_and_remember_their_request() -> None:
    body = pod({"statestore.dapr.io/app-id": "cart", "statestore.dapr.io/stores": "b, a"}, labels={"x": "1"})
    req = inject.request(body)
    out = inject.mutate(body, "ns", req, inject.select([], "cart"), PODS, native=False)
    assert out["metadata"]["labels"] == {"x": "1", inject.APP_ID_LABEL: "cart"}
    assert "labels" in body["metadata"] and inject.APP_ID_LABEL not in body["metadata"]["labels"]
    again = inject.request_of_pod(out)
    assert (again.app_id, again.stores) == ("cart", ("a", "b"))
    assert inject.config_map_name(again.app_id, again.stores) == inject.config_map_name("cart", req.stores)
