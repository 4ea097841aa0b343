"""The Deployment the operator renders for a pluggable Component really serves state: both of its
containers run as local processes the way the kubelet would run them (commands, args, env, the
ConfigMap as files, one sockets folder for the shared emptyDir), the component's container started
after ours, and state driven through the state API over HTTP into the components-contrib store; and
the same for the pod sidecar mode injects with `dapr.io/inject-pluggable-components`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_testing import Kube, Operator, container_env, injecting_operator, wait_for, without

from fixtures.pluggable import contrib_pluggable_binary
from fixtures.sidecar import sidecar_process

pytestmark = [pytest.mark.k8s, pytest.mark.backends]

SOCKETS = "/tmp/dapr-components-sockets"


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short folder: a Unix socket's path must fit in about 100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="plug-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def local(value: str, mounts: dict[str, Path]) -> str:
    """A path inside the pod, as it is on this machine (the volumes the test plays)."""
    for inside, outside in mounts.items():
        if value == inside or value.startswith(inside + "/"):
            return outside.as_posix() + value[len(inside) :]
    return value


def test_rendered_pluggable_deployment_serves_state(
    kube: Kube, operator: Operator, tmp_path: Path, sockets: Path
) -> None:
    plug = {
        "name": "memstore",
        "image": "example.test/contrib-pluggable:1",
        "command": ["contrib-pluggable"],
        "args": ["-socket", f"{SOCKETS}/memstore.sock", "-store", "in-memory"],
    }
    kube.apply(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "carts", "annotations": {"dapr.io/component-container": json.dumps(plug)}},
            "spec": {
                "type": "state.memstore",
                "version": "v1",
                "metadata": [{"name": "anyKey", "value": "v"}],
            },
        }
    )
    kube.wait_condition("carts", "Validated", "True", "PluggableComponent")
    pod = kube.must_get("deployment", "statestore-carts")["spec"]["template"]["spec"]
    cm = kube.must_get("configmap", "statestore-carts")
    ours, theirs = pod["containers"]
    # The volumes as the kubelet would provide them: the ConfigMap's files, and one folder for the
    # sockets emptyDir, wherever each container mounts it.
    components = tmp_path / "components"
    components.mkdir()
    for key, text in cm["data"].items():
        (components / key).write_text(text)
    volumes: dict[str, Path] = {"components": components, "dapr-components-unix-domain-socket": sockets}
    mounts = [
        {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"] if m["name"] in volumes}
        for c in (ours, theirs)
    ]
    (socket_volume,) = [v for v in pod["volumes"] if v["name"] == "dapr-components-unix-domain-socket"]
    assert socket_volume["emptyDir"] == {}

    assert ours["command"] == ["statestore-sidecar"]
    args = [local(a, mounts[0]) for a in ours["args"]]
    args = without(args, "--dapr-http-port", "--dapr-grpc-port", "--metrics-port")
    env = {k: local(v, mounts[0]) for k, v in container_env(kube, ours["env"]).items()}
    assert env["DAPR_COMPONENTS_SOCKETS_FOLDER"] == sockets.as_posix()

    # The image's entrypoint is the Go test store of `make pluggable`.
    assert theirs["command"] == ["contrib-pluggable"]
    their_env = {k: local(v, mounts[1]) for k, v in container_env(kube, theirs["env"]).items()}
    assert their_env["DAPR_COMPONENT_SOCKETS_FOLDER"] == sockets.as_posix()
    command = [str(contrib_pluggable_binary()), *(local(a, mounts[1]) for a in theirs["args"])]

    with sidecar_process(args, env, wait_ready=False) as server:
        url = server.url
        # No component yet: alive, not ready, and saying why.
        assert httpx.get(f"{url}/v1.0/healthz").status_code == 500
        early = httpx.get(f"{url}/v1.0/state/carts/c-1")
        assert early.status_code == 500 and "no socket for pluggable component" in early.text
        log = (tmp_path / "memstore.log").open("wb")
        proc = subprocess.Popen(command, env={"PATH": "/usr/bin:/bin", **their_env}, stdout=log, stderr=log)
        try:
            wait_for("ready", lambda: httpx.get(f"{url}/v1.0/healthz").status_code == 204, timeout=90)
            saved = httpx.post(f"{url}/v1.0/state/carts", json=[{"key": "c-1", "value": {"items": 2}}])
            assert saved.status_code == 204, saved.text
            got = httpx.get(f"{url}/v1.0/state/carts/c-1")
            assert got.status_code == 200 and got.json() == {"items": 2}
            etag = got.headers["etag"]
            stale = httpx.post(f"{url}/v1.0/state/carts", json=[{"key": "c-1", "value": 3, "etag": "nope"}])
            assert stale.status_code == 409, stale.text
            fresh = httpx.post(f"{url}/v1.0/state/carts", json=[{"key": "c-1", "value": 3, "etag": etag}])
            assert fresh.status_code == 204, fresh.text
            assert httpx.get(f"{url}/v1.0/state/carts/c-1").json() == 3
            meta: dict[str, Any] = httpx.get(f"{url}/v1.0/metadata").json()
            (registered,) = meta["components"]
            assert registered["name"] == "carts" and registered["type"] == "state.memstore"
            assert {"ETAG", "TRANSACTIONAL"} <= set(registered["capabilities"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            log.close()


def test_injected_pluggable_pod_serves_state(
    kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path, sockets: Path
) -> None:
    """Sidecar mode: the pod the webhook returns, with `dapr.io/inject-pluggable-components`, runs (as
    local processes) the `statestore` sidecar and the component's container over one sockets folder."""
    plug = {
        "name": "memstore",
        "image": "example.test/contrib-pluggable:1",
        "command": ["contrib-pluggable"],
        "args": ["-socket", f"{SOCKETS}/memstore.sock"],
    }
    with injecting_operator(kube, start_operator, tmp_path):
        kube.apply(
            {
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {
                    "name": "carts",
                    "annotations": {"dapr.io/component-container": json.dumps(plug)},
                },
                "spec": {"type": "state.memstore", "version": "v1", "metadata": []},
                "scopes": ["web"],
            }
        )
        kube.wait_condition("carts", "Validated", "True", "PluggableComponent")
        annotations = {
            "statestore.dapr.io/inject": "true",
            "statestore.dapr.io/app-id": "web",
            "dapr.io/inject-pluggable-components": "true",
        }
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "example.test/app:1"}]},
            }
        )
        pod = kube.must_get("pod", "web")["spec"]
        (ours,) = [
            c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == "statestore"
        ]
        (theirs,) = [c for c in pod["containers"] if c["name"] == "memstore"]
        (cm_volume,) = [v for v in pod["volumes"] if v["name"] == "statestore-components"]
        cm = kube.must_get("configmap", cm_volume["configMap"]["name"])
        components = tmp_path / "components"
        components.mkdir()
        for name, text in cm["data"].items():
            (components / name).write_text(text)
        volumes = {"statestore-components": components, "dapr-components-unix-domain-socket": sockets}
        mounts = [
            {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"] if m["name"] in volumes}
            for c in (ours, theirs)
        ]
        args = without(
            [local(a, mounts[0]) for a in ours["args"]],
            "--dapr-http-port",
            "--dapr-grpc-port",
            "--metrics-port",
        )
        env = {k: local(v, mounts[0]) for k, v in container_env(kube, ours["env"]).items()}
        their_env = {k: local(v, mounts[1]) for k, v in container_env(kube, theirs["env"]).items()}
        command = [str(contrib_pluggable_binary()), *(local(a, mounts[1]) for a in theirs["args"])]
        log = (tmp_path / "memstore.log").open("wb")
        proc = subprocess.Popen(command, env={"PATH": "/usr/bin:/bin", **their_env}, stdout=log, stderr=log)
        try:
            with sidecar_process(args, env, wait_ready=False) as server:
                url = server.url
                wait_for("ready", lambda: httpx.get(f"{url}/v1.0/healthz").status_code == 204, timeout=90)
                saved = httpx.post(f"{url}/v1.0/state/carts", json=[{"key": "c-1", "value": [1, 2]}])
                assert saved.status_code == 204, saved.text
                assert httpx.get(f"{url}/v1.0/state/carts/c-1").json() == [1, 2]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            log.close()
