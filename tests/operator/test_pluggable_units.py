"""Pluggable Components in the operator's pure functions: the annotation's checks, the Validated
verdict, the rendered Deployment and the admission verdict."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from statestore_operator import admission, inject, pluggable, render, validation
from statestore_operator.validation import check
from statestore_sidecar.validation import parse

PODS = render.PodSettings(image="img:1")
MEMSTORE = {
    "name": "memstore",
    "image": "example.test/memstore:1",
    "args": ["-socket", "/tmp/dapr-components-sockets/memstore.sock"],
}


def body(container: Any = MEMSTORE, ctype: str = "state.memstore", name: str = "orders") -> dict[str, Any]:
    annotations = (
        {}
        if container is None
        else {pluggable.ANNOTATION: container if isinstance(container, str) else json.dumps(container)}
    )
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "annotations": annotations},
        "spec": {
            "type": ctype,
            "version": "v1",
            "metadata": [{"name": "anything", "value": "x"}, {"name": "keyPrefix", "value": "name"}],
        },
    }


def test_a_declared_pluggable_type_passes_its_metadata_and_says_so() -> None:
    outcome = check(body(), None)
    assert outcome.ok, outcome.message
    assert outcome.reason == validation.VALID_PLUGGABLE
    assert "pluggable component served by container 'memstore'" in outcome.message
    assert "passed to it as given" in outcome.message
    assert outcome.validated is not None and outcome.validated.metadata.values["anything"] == "x"
    # The keys the server reads itself are still checked.
    bad = body()
    bad["spec"]["metadata"].append({"name": "actorStateStore", "value": "maybe"})
    assert not check(bad, None).ok


def test_an_unknown_type_without_the_annotation_is_refused_as_before() -> None:
    outcome = check(body(container=None), None)
    assert not outcome.ok
    assert outcome.reason == validation.UNSUPPORTED_TYPE
    assert "unknown state store type 'state.memstore'" in outcome.message
    # An empty annotation declares nothing.
    assert check(body(container=""), None).reason == validation.UNSUPPORTED_TYPE


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ({"name": "x"}, "image is required"),
        ({"name": "x", "image": ""}, "image is required"),
        ({"name": "statestore", "image": "i"}, "is the state API container's"),
        ({"name": "Bad_Name", "image": "i"}, "is not a container name"),
        ({"name": "x", "image": "i", "imagee": "typo"}, "unknown container field(s) 'imagee'"),
        ({"name": "x", "image": "i", "command": "run"}, "command must be a list"),
        ({"name": "x", "image": "i", "args": [1]}, "args must be a list of strings"),
        (
            {"name": "x", "image": "i", "ports": [{"containerPort": 3500}]},
            "port 3500 is the state API's 'http'",
        ),
        ({"name": "x", "image": "i", "ports": [{"containerPort": 8080, "name": "grpc"}]}, "port name 'grpc'"),
        ({"name": "x", "image": "i", "ports": [{"containerPort": 0}]}, "must be a port number"),
        (
            {"name": "x", "image": "i", "env": [{"name": "DAPR_COMPONENT_SOCKETS_FOLDER", "value": "/s"}]},
            "is set by the operator",
        ),
        (
            {"name": "x", "image": "i", "volumeMounts": [{"name": "tmp", "mountPath": "/scratch"}]},
            "volume 'tmp' is the state API's",
        ),
        (
            {
                "name": "x",
                "image": "i",
                "volumeMounts": [{"name": "s", "mountPath": "/tmp/dapr-components-sockets"}],
            },
            "is the sockets folder",
        ),
        ({"name": "x", "image": "i", "tty": "yes"}, "tty must be true or false"),
    ],
)
def test_bad_annotations_are_refused_with_the_reason(container: Any, expected: str) -> None:
    outcome = check(body(container), None)
    assert not outcome.ok
    assert outcome.reason == validation.INVALID_ANNOTATION
    assert outcome.field == pluggable.ANNOTATION
    assert outcome.message.startswith(f"annotation {pluggable.ANNOTATION!r}: ")
    assert expected in outcome.message
    # The webhook refuses with the same words.
    verdict = admission.review(body(container), [])
    assert not verdict.allowed and verdict.message == outcome.message


def test_the_name_defaults_to_the_components_as_in_dapr() -> None:
    unnamed = {"image": "example.test/memstore:1"}
    assert pluggable.container_of(body(unnamed))["name"] == "orders"
    refused = check(body(unnamed, name="my.orders"), None)
    assert not refused.ok and "the Component's, as none is given" in refused.message


def test_the_annotation_on_a_builtin_type_is_refused() -> None:
    outcome = check(body(ctype="state.redis"), None)
    assert not outcome.ok and outcome.reason == validation.INVALID_ANNOTATION
    assert "state.redis is a built-in store type" in outcome.message


def test_the_deployment_runs_the_component_container_beside_ours() -> None:
    b = body({**MEMSTORE, "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]})
    dep = render.deployment(b, parse(b), PODS)
    pod = dep["spec"]["template"]["spec"]
    ours, theirs = pod["containers"]
    assert ours["name"] == render.CONTAINER
    assert theirs["name"] == "memstore" and theirs["image"] == MEMSTORE["image"]
    assert theirs["args"] == MEMSTORE["args"]
    want_env = [{"name": n, "value": "/tmp/dapr-components-sockets"} for n in pluggable.SOCKET_ENV]
    for container in (ours, theirs):
        assert [e for e in container["env"] if e["name"] in pluggable.SOCKET_ENV] == want_env
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == pluggable.SOCKET_VOLUME]
        assert mount["mountPath"] == "/tmp/dapr-components-sockets"
    # Our socket mount comes after our /tmp mount, which it sits inside.
    names = [m["name"] for m in ours["volumeMounts"]]
    assert names.index("tmp") < names.index(pluggable.SOCKET_VOLUME)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[pluggable.SOCKET_VOLUME] == {"name": pluggable.SOCKET_VOLUME, "emptyDir": {}}
    assert volumes["cache"] == {"name": "cache", "emptyDir": {}}  # Dapr's default for its own mounts
    # The server is told (in its Component file) to wait for the socket.
    doc = yaml.safe_load(render.config_map(b)["data"][render.COMPONENT_FILE])
    assert doc["metadata"]["annotations"] == {
        pluggable.ANNOTATION: b["metadata"]["annotations"][pluggable.ANNOTATION]
    }
    assert parse(doc).pluggable


def test_builtin_stores_render_as_before() -> None:
    b = body(container=None, ctype="state.in-memory")
    b["spec"]["metadata"] = []
    b["metadata"]["annotations"] = {"other": "x"}
    dep = render.deployment(b, parse(b), PODS)
    pod = dep["spec"]["template"]["spec"]
    (ours,) = pod["containers"]
    assert not [e for e in ours["env"] if e["name"] in pluggable.SOCKET_ENV]
    assert pluggable.SOCKET_VOLUME not in {v["name"] for v in pod["volumes"]}
    doc = yaml.safe_load(render.config_map(b)["data"][render.COMPONENT_FILE])
    assert "annotations" not in doc["metadata"]


# --- sidecar mode ---------------------------------------------------------------------------------
def app_pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "annotations": {"statestore.dapr.io/inject": "true", **annotations},
        },
        "spec": {
            "containers": [{"name": "app", "image": "app:1"}],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }


def test_injection_adds_the_component_container_when_the_pod_asks_as_in_dapr() -> None:
    b = body(
        {
            **MEMSTORE,
            "volumeMounts": [{"name": "cache", "mountPath": "/c"}, {"name": "own", "mountPath": "/o"}],
        }
    )
    twin = body(MEMSTORE, name="z-carts")  # same image: one container serves both (Dapr's rule)
    pod = app_pod({pluggable.INJECT_ANNOTATION: "true"})
    req = inject.request(pod)
    selection = inject.select([b, twin], "web")
    out = inject.mutate(pod, "ns", req, selection, PODS, native=True)
    assert inject.pluggable_plan(pod, req, selection)[1] == []
    app, plug = out["spec"]["containers"]
    assert plug["name"] == "memstore" and plug["image"] == MEMSTORE["image"]
    (sidecar,) = out["spec"]["initContainers"]
    for container in (sidecar, plug):
        assert pluggable.socket_mount() in container["volumeMounts"]
        assert pluggable.socket_env()[0] in container["env"] and pluggable.socket_env()[1] in container["env"]
    assert "DAPR_COMPONENT_SOCKETS_FOLDER" not in {e["name"] for e in app.get("env", [])}
    names = [v["name"] for v in out["spec"]["volumes"]]
    # The pod's own `cache` is shared (Dapr's rule), `own` is a new emptyDir, the sockets folder is one.
    assert sorted(names) == sorted(
        ["cache", "statestore-components", "statestore-tmp", pluggable.SOCKET_VOLUME, "own"]
    )


def test_without_the_annotation_the_pod_is_warned_or_its_own_container_shares_the_folder() -> None:
    selection = inject.select([body()], "web")
    plain = app_pod({})
    out = inject.mutate(plain, "ns", inject.request(plain), selection, PODS, native=True)
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]
    (warning,) = inject.pluggable_plan(plain, inject.request(plain), selection)[1]
    assert "pluggable Component 'orders' has no container in this pod" in warning
    assert pluggable.INJECT_ANNOTATION in warning
    # The pod brings its own component container and names it, as Dapr's dapr.io/pluggable-components.
    own = app_pod({pluggable.LISTED_ANNOTATION: "app"})
    assert inject.pluggable_plan(own, inject.request(own), selection)[1] == []
    out = inject.mutate(own, "ns", inject.request(own), selection, PODS, native=True)
    (app,) = out["spec"]["containers"]
    assert pluggable.socket_mount() in app["volumeMounts"]
    # No pluggable store served: nothing of this.
    builtin = body(container=None, ctype="state.in-memory")
    builtin["spec"]["metadata"] = []
    out = inject.mutate(own, "ns", inject.request(own), inject.select([builtin], "web"), PODS, native=True)
    assert pluggable.SOCKET_VOLUME not in {v["name"] for v in out["spec"]["volumes"]}
    assert "volumeMounts" not in out["spec"]["containers"][0]
