"""Helpers of the operator tests: the real `statestore-operator` process and kubectl views."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fixtures.k8s import ControlPlane
from fixtures.operator_process import OperatorProcess, WaitTimeout, wait_for
from fixtures.sidecar import Sidecar, free_port

__all__ = [
    "CRD",
    "IMAGE",
    "ROOT",
    "Kube",
    "Operator",
    "WaitTimeout",
    "container_env",
    "injecting_operator",
    "no_change",
    "reconciled",
    "reconciles",
    "rendered_pod",
    "settled",
    "wait_for",
    "without",
]

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "components.dapr.io.yaml"
IMAGE = "example.test/statestore-sidecar:test"
UNSCHEDULABLE_CPU = "1000"


class Operator(OperatorProcess):
    """One `statestore-operator` process; `stop()`/`start()` restart it like a pod would be."""

    def __init__(self, cluster: ControlPlane, namespace: str, log: Path, extra: Sequence[str]) -> None:
        super().__init__(log)
        self.cluster = cluster
        self.namespace = namespace
        self.extra = list(extra)
        self.metrics_port = free_port()

    def start(self) -> None:
        self.launch(
            [
                "--namespace",
                self.namespace,
                "--image",
                IMAGE,
                "--resync-seconds",
                "3",
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                self.liveness_url,
                # More CPU than the fake node has: the pods stay Pending, no kwok stage makes them
                # Ready behind the tests' back, and the tests play the kubelet (make_pods_ready).
                "--pod-cpu-request",
                UNSCHEDULABLE_CPU,
                *self.extra,
            ],
            {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())


class Kube:
    """kubectl helpers for one namespace, reading objects the way a user would."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def apply(self, manifest: dict[str, Any] | str) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=text)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.cluster.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def must_get(self, kind: str, name: str) -> dict[str, Any]:
        return wait_for(f"{kind} {name}", lambda: self.get(kind, name))

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        body = self.get("components.dapr.io", name) or {}
        return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.conditions(name).get(type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        try:
            return wait_for(f"{name}: {type_}={status} ({reason})", probe, timeout=timeout)
        except WaitTimeout:
            pytest.fail(f"{type_} of {name} is {self.conditions(name).get(type_)}, wanted {status}/{reason}")

    def events(self, name: str) -> list[dict[str, Any]]:
        data = self.cluster.kubectl_json(
            "get", "events", "-n", self.ns, "--field-selector", f"involvedObject.name={name}"
        )
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    def make_pods_ready(self, component: str) -> None:
        """Play the kubelet (there is no node here): mark the Deployment's Pods Running and Ready.

        The real ReplicaSet and Deployment controllers then compute the Deployment's status from them.
        """

        def pods() -> list[dict[str, Any]]:
            data = self.cluster.kubectl_json(
                "get", "pods", "-n", self.ns, "-l", f"app.kubernetes.io/instance={component}"
            )
            return [p for p in data.get("items") or [] if not p["metadata"].get("deletionTimestamp")]

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pod in wait_for(f"pods of {component}", pods):
            status = {
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                }
            }
            self.cluster.kubectl(
                "patch",
                "pod",
                pod["metadata"]["name"],
                "-n",
                self.ns,
                "--subresource=status",
                "--type=strategic",
                "-p",
                json.dumps(status),
            )


@contextlib.contextmanager
def no_change(kube: Kube, *objects: tuple[str, str]) -> Iterator[None]:
    """Assert that the objects' resourceVersions are the same after the block."""
    before = {o: (kube.get(*o) or {}).get("metadata", {}).get("resourceVersion") for o in objects}
    yield
    after = {o: (kube.get(*o) or {}).get("metadata", {}).get("resourceVersion") for o in objects}
    assert after == before


def reconciles(operator: Operator) -> int:
    """Reconciliations the operator process has finished (its `statestore_operator_reconcile_total`)."""
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in operator.metrics().splitlines()
        if line.startswith("statestore_operator_reconcile_total{")
    )


def reconciled(operator: Operator, more: int, since: int, timeout: float = 120) -> int:
    """Wait until the operator has finished `more` reconciliations beyond the count `since`.

    What a "nothing changed" check waits for instead of a sleep: evidence that the operator did look
    at the objects again (resync rounds, restarts), however slow the machine.
    """
    return wait_for(
        f"{more} more reconciliations than {since}",
        lambda: count if (count := reconciles(operator)) >= since + more else None,
        timeout=timeout,
    )


def settled(kube: Kube, *objects: tuple[str, str], quiet: float = 2.0) -> None:
    """Wait until the controllers are done with the objects (no resourceVersion moves for `quiet` s)."""
    last: dict[tuple[str, str], Any] = {}
    since = time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        now = {o: (kube.get(*o) or {}).get("metadata", {}).get("resourceVersion") for o in objects}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.3)
    pytest.fail(f"{objects} kept changing for 60s")


def container_env(kube: Kube, env: list[dict[str, Any]]) -> dict[str, str]:
    """Resolve a container's env the way the kubelet does: Secret keys and the downward API."""
    resolved: dict[str, str] = {}
    for item in env:
        source = item.get("valueFrom")
        if source is None:
            resolved[item["name"]] = item.get("value", "")
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = (
                kube.get("secret", ref["name"])
                if ref.get("optional")
                else kube.must_get("secret", ref["name"])
            )
            data = (secret or {}).get("data") or {}
            if ref["key"] not in data and ref.get("optional"):
                continue  # the kubelet leaves an optional variable out
            resolved[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            resolved[item["name"]] = kube.ns
        else:
            raise AssertionError(f"unexpected env source {source}")
    return resolved


def without(args: list[str], *flags: str) -> list[str]:
    """`args` without the given flags and their values."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


@contextlib.contextmanager
def rendered_pod(kube: Kube, component: str, workdir: Path) -> Iterator[str]:
    """`rendered_server`'s base URL."""
    with rendered_server(kube, component, workdir) as server:
        yield server.url


@contextlib.contextmanager
def rendered_server(kube: Kube, component: str, workdir: Path) -> Iterator[Sidecar]:
    """Run the container the operator rendered for `component` as a local process, the way the kubelet
    would (its command, args and resolved env, the ConfigMap as files); yield the running server.

    A pod has its own network namespace; locally the server gets free loopback ports instead.
    """
    from fixtures.sidecar import sidecar_process

    deploy = kube.must_get("deployment", f"statestore-{component}")
    cm = kube.must_get("configmap", f"statestore-{component}")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "components"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "components"]
    folder = workdir / f"components-{component}"
    folder.mkdir()
    for key, text in cm["data"].items():
        (folder / key).write_text(text)
    assert container["command"] == ["statestore-sidecar"]
    args = [folder.as_posix() if a == mount["mountPath"] else a for a in container["args"]]
    args = without(args, "--dapr-http-port", "--dapr-grpc-port", "--metrics-port")
    with sidecar_process(args, container_env(kube, container["env"])) as server:
        yield server


def start_with_webhook(kube: Kube, start_operator: Any, tmp_path: Path, *args: str) -> tuple[Operator, str]:
    """An operator serving its admission webhook and managing its configurations (named for the test),
    with `args` added to its command line; the operator and the configurations' name."""
    cert, key = kube.cluster.ca.issue(
        tmp_path, "webhook", common_name="127.0.0.1", hosts=["127.0.0.1"], server=True
    )
    chain = tmp_path / "chain.crt"
    chain.write_bytes(cert.read_bytes() + kube.cluster.ca.cert_pem)
    config = f"statestore-test-{kube.ns}.dapr.io"  # webhook names need three DNS segments
    operator = start_operator(
        "--webhook-address",
        "127.0.0.1",
        "--webhook-host",
        "127.0.0.1",
        "--webhook-port",
        str(free_port()),
        "--webhook-cert",
        str(chain),
        "--webhook-key",
        str(key),
        "--webhook-config-name",
        config,
        *args,
    )
    return operator, config


@contextlib.contextmanager
def injecting_operator(kube: Kube, start_operator: Any, tmp_path: Path, *extra: str) -> Iterator[Operator]:
    """The operator with its webhooks (Components and Pods) registered against the control plane."""
    op, config = start_with_webhook(kube, start_operator, tmp_path, "--inject-sidecars", *extra)
    try:
        wait_for(
            "the mutating webhook configuration",
            lambda: (
                kube.cluster.kubectl("get", "mutatingwebhookconfiguration", config, check=False).returncode
                == 0
            ),
        )
        yield op
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kube.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)


def webhook_configurations(kube: Kube, name: str) -> list[str]:
    """Which of the two kinds of webhook configuration named `name` exist."""
    kinds = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
    return [kind for kind in kinds if kube.cluster.kubectl("get", kind, name, check=False).returncode == 0]


# --- documented commands: the docs' `<!-- tested: NAME -->` blocks, run as a user runs them ---------------


def run_documented(kube: Kube, tmp_path: Path, script: str) -> str:
    """A documented shell block, with kubectl on PATH and the test namespace as the current one; its
    output."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube.cluster.kubeconfig.read_text())
    kube.cluster.kubectl(
        "config", "set-context", "--current", f"--namespace={kube.ns}", kubeconfig=kubeconfig
    )
    env = {
        "PATH": f"{kube.cluster.binary('kubectl').parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(tmp_path / "kubectl-cache"),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{script}\nfailed:\n{result.stderr}{result.stdout}"
    return result.stdout
