"""Living beside Dapr's own CRD, against a real API server.

* Every shape of Dapr's component schema is accepted, and stored the same, by Dapr's CRD and ours.
* The operator against Dapr's CRD (no status subresource): it says so (log, an Event per Component),
  still rolls out the Deployment, and keeps the state in annotations; after the documented CRD
  upgrade (docs/install.md), the conditions appear in `.status`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dapr_crd import dapr_crd_path, regrouped
from operator_testing import CRD, ROOT, Kube, Operator, wait_for

from fixtures.docs import documented
from fixtures.k8s import ControlPlane

pytestmark = pytest.mark.k8s

INSTALL_DOC = ROOT / "docs" / "install.md"


def run_doc_block(cluster: ControlPlane, kind: str, namespace: str) -> str:
    """A documented bash block, from the repository root, with the test cluster as kubectl's context."""
    env = {**cluster.env(), "PATH": f"{cluster.binary('kubectl').parent}{os.pathsep}{os.environ['PATH']}"}
    env["KUBECACHEDIR"] = str(cluster.workdir / "kubectl-doc-cache")
    script = f"kubectl config set-context --current --namespace={namespace} >/dev/null\n" + documented(
        "install.md", kind
    )
    kubeconfig = cluster.workdir / f"doc-{namespace}.kubeconfig"
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{script}\nfailed:\n{result.stderr}{result.stdout}"
    return result.stdout


# Every shape of Dapr's component schema (docs.dapr.io reference/resource-specs/component-schema and
# "reference secrets in components"): plain values of each JSON type, secretKeyRef with and without a
# key, envRef, auth.secretStore, scopes, ignoreErrors, initTimeout, an empty metadata list.
SHAPES: list[dict[str, Any]] = [
    {"spec": {"type": "state.in-memory", "version": "v1", "metadata": []}},
    {
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "initTimeout": "1m",
            "ignoreErrors": True,
            "metadata": [
                {"name": "redisHost", "value": "localhost:6379"},
                {"name": "redisDB", "value": 2},
                {"name": "enableTLS", "value": False},
                {"name": "ttlInSeconds", "value": 3.5},
                {"name": "nested", "value": {"a": [1, "b", None]}},
                {"name": "list", "value": ["x", "y"]},
            ],
        },
        "scopes": ["app1", "app2"],
    },
    {
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "value": "localhost:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis-secret", "key": "redis-password"}},
                {"name": "other", "secretKeyRef": {"name": "just-a-name"}},
            ],
        },
        "auth": {"secretStore": "kubernetes"},
    },
    {
        "spec": {
            "type": "state.postgresql",
            "version": "v2",
            "metadata": [
                {"name": "connectionString", "envRef": "PG_CONNECTION"},
                {"name": "mixed", "value": "v", "secretKeyRef": {"name": "s", "key": "k"}},
            ],
        },
        "auth": {"secretStore": "vault"},
    },
    {"spec": {"type": "pubsub.redis", "version": "v1", "metadata": [{"name": "redisHost", "value": "h:1"}]}},
]


@pytest.fixture
def both_crds(component_crd: ControlPlane) -> Iterator[tuple[str, str]]:
    """Dapr's schema and ours side by side, each under a group of its own."""
    theirs = regrouped(yaml.safe_load(dapr_crd_path().read_text()), "upstream.dapr.test")
    ours = regrouped(yaml.safe_load(CRD.read_text()), "ours.dapr.test")
    for crd in (theirs, ours):
        component_crd.kubectl("apply", "-f", "-", input=json.dumps(crd))
        component_crd.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s"
        )
    try:
        yield "upstream.dapr.test", "ours.dapr.test"
    finally:
        for crd in (theirs, ours):
            component_crd.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", check=False)


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_every_documented_shape_is_stored_alike_by_both_crds(
    both_crds: tuple[str, str], kube: Kube, index: int
) -> None:
    stored = []
    for group in both_crds:
        doc = {
            "apiVersion": f"{group}/v1alpha1",
            "kind": "Component",
            "metadata": {"name": f"shape-{index}"},
            **SHAPES[index],
        }
        kube.apply(doc)
        body = kube.must_get(f"components.{group}", f"shape-{index}")
        stored.append({k: v for k, v in body.items() if k not in ("apiVersion", "metadata")})
    assert stored[0] == stored[1]
    assert {k: v for k, v in stored[1].items() if k != "kind"} == SHAPES[index]


def test_operator_beside_daprs_crd_then_after_the_upgrade(
    component_crd: ControlPlane, kube: Kube, start_operator: Any
) -> None:
    cluster = component_crd
    # What a Dapr upgrade does to the CRD: replace it with Dapr's own.
    cluster.kubectl("replace", "-f", str(dapr_crd_path()))
    try:
        wait_for(
            "the status subresource to go",
            lambda: (
                "components/status" not in cluster.kubectl("get", "--raw", "/apis/dapr.io/v1alpha1").stdout
            ),
        )
        op: Operator = start_operator()
        kube.apply(
            {
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": "mem"},
                "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
            }
        )
        # The operator says so: a log line at start-up, and a Warning Event on the Component.
        wait_for(
            "the start-up warning",
            lambda: "StatusSubresourceMissing" in op.output() or "no status subresource" in op.output(),
        )
        events = wait_for(
            "a StatusSubresourceMissing Event",
            lambda: [e for e in kube.events("mem") if e["reason"] == "StatusSubresourceMissing"],
        )
        assert events[0]["type"] == "Warning" and "crds/components.dapr.io.yaml" in events[0]["message"]
        # It still rolls out the Deployment, and reports the state in annotations and Events.
        kube.must_get("deployment", "statestore-mem")

        def annotations() -> dict[str, str]:
            return dict(
                (kube.get("components.dapr.io", "mem") or {}).get("metadata", {}).get("annotations") or {}
            )

        wait_for(
            "the ready-reason annotation",
            lambda: annotations().get("statestore.dapr.io/ready-reason") == "Progressing",
        )
        assert annotations()["statestore.dapr.io/ready"] == "False"
        kube.make_pods_ready("mem")
        wait_for(
            "ready=True in the annotation", lambda: annotations().get("statestore.dapr.io/ready") == "True"
        )
        conditions = json.loads(annotations()["statestore.dapr.io/conditions"])
        assert {c["type"]: c["status"] for c in conditions} == {
            "Validated": "True",
            "Available": "True",
            "Ready": "True",
        }
        assert "status" not in kube.must_get("components.dapr.io", "mem")
        assert any(e["reason"] == "Available" for e in kube.events("mem"))
        # The documented view of those annotations.
        listing = run_doc_block(cluster, "crd_fallback", kube.ns)
        assert re.search(r"^mem\s+True\s+Available\s*$", listing, re.M), listing

        # The documented upgrade: conditions appear in .status, the annotations go.
        run_doc_block(cluster, "crd_upgrade", kube.ns)
        kube.wait_condition("mem", "Ready", "True", "Available", timeout=60)
        wait_for("the annotations to go", lambda: "statestore.dapr.io/conditions" not in annotations())
        table = cluster.kubectl("get", "components", "mem", "-n", kube.ns).stdout
        assert re.search(r"^mem\s+state\.in-memory\s+v1\s+True\s+Available", table, re.M), table
    finally:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
