"""The local control plane is a real Kubernetes: version, CRDs, controllers, GC, RBAC and admission webhooks.

Every assertion is on a real API server response, so these tests fail if a piece is missing (e.g.
without kube-controller-manager there is no ReplicaSet and no garbage collection).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fixtures.k8s import FAKE_NODE, CertificateAuthority, ControlPlane, KubectlError
from statestore_testing.waiting import wait_for

pytestmark = pytest.mark.k8s


def get_json(cluster: ControlPlane, *args: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *args, "-o", "json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def test_server_reports_the_built_version(k8s_cluster: ControlPlane) -> None:
    info = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)
    server = info["serverVersion"]
    assert server["gitVersion"] == f"v{k8s_cluster.version}"
    assert (server["major"], server["minor"]) == ("1", k8s_cluster.version.split(".")[1])
    assert server["gitTreeState"] == "clean"


def test_admin_identity_is_the_client_certificate(k8s_cluster: ControlPlane) -> None:
    review = json.loads(k8s_cluster.kubectl("auth", "whoami", "-o", "json").stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == k8s_cluster.admin_user
    assert "system:masters" in user["groups"]


CRD_GROUP = "test.statestore.dev"


def widget_crd(plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": plural[:-1].capitalize()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_with_status_subresource_and_pruning(k8s_cluster: ControlPlane, namespace: str) -> None:
    plural = f"widgets{uuid.uuid4().hex[:6]}"
    kind = plural[:-1].capitalize()
    crd_name = f"{plural}.{CRD_GROUP}"
    k8s_cluster.apply(widget_crd(plural))
    try:
        k8s_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s")
        obj = {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": kind,
            "metadata": {"name": "w1"},
            "spec": {"size": 3, "unknownField": "dropped"},
            "status": {"phase": "ignored-on-create"},
        }
        # --validate=false: kubectl would otherwise refuse the unknown field client-side; we want the
        # server to see it and prune it.
        k8s_cluster.kubectl("create", "-n", namespace, "--validate=false", "-f", "-", input=json.dumps(obj))
        stored = get_json(k8s_cluster, "-n", namespace, f"{plural}/w1")
        assert stored["spec"] == {"size": 3}, "unknown field must be pruned by the structural schema"
        assert "status" not in stored, "status is ignored on create when the subresource is enabled"

        # The schema is enforced (minimum: 1).
        bad = k8s_cluster.kubectl(
            "patch", "-n", namespace, f"{plural}/w1", "--type=merge", "-p", '{"spec":{"size":0}}', check=False
        )
        assert bad.returncode != 0
        assert "spec.size" in bad.stderr

        # Status is written through the subresource only.
        k8s_cluster.kubectl(
            "patch", "-n", namespace, f"{plural}/w1", "--subresource=status", "--type=merge",
            "-p", '{"status":{"phase":"Ready"}}',
        )  # fmt: skip
        k8s_cluster.kubectl(
            "patch", "-n", namespace, f"{plural}/w1", "--type=merge", "-p", '{"status":{"phase":"Hacked"}}'
        )
        stored = get_json(k8s_cluster, "-n", namespace, f"{plural}/w1")
        assert stored["status"] == {"phase": "Ready"}
        assert stored["metadata"]["generation"] == 1, "status writes must not bump the generation"
    finally:
        k8s_cluster.kubectl("delete", "crd", crd_name, "--wait=false", "--ignore-not-found", check=False)


def test_deployment_gets_a_replicaset(k8s_cluster: ControlPlane, namespace: str) -> None:
    k8s_cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    # Never pulled: there is no kubelet (kwok only fakes Pod status).
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                },
            },
        },
        namespace=namespace,
    )
    deployment_uid = get_json(k8s_cluster, "-n", namespace, "deployment/web")["metadata"]["uid"]

    def replicaset() -> dict[str, Any] | None:
        items = get_json(k8s_cluster, "-n", namespace, "replicasets", "-l", "app=web")["items"]
        return items[0] if items else None

    rs = wait_for("the Deployment's ReplicaSet", replicaset)
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", "web", deployment_uid)
    assert rs["spec"]["replicas"] == 2

    # The ReplicaSet controller creates the Pods.
    pods = wait_for(
        "2 Pods",
        lambda: (
            (items := get_json(k8s_cluster, "-n", namespace, "pods", "-l", "app=web")["items"])
            and len(items) == 2
            and items
        ),
    )
    assert {p["metadata"]["ownerReferences"][0]["name"] for p in pods} == {rs["metadata"]["name"]}

    if k8s_cluster.kwok_enabled:
        # kube-scheduler binds the Pods to the kwok node, kwok marks them Running/Ready, and the
        # Deployment controller reports the ready replicas.
        wait_for(
            "2 ready replicas (kwok)",
            lambda: (
                get_json(k8s_cluster, "-n", namespace, "deployment/web")["status"].get("readyReplicas") == 2
            ),
        )
        pods = get_json(k8s_cluster, "-n", namespace, "pods", "-l", "app=web")["items"]
        assert {p["spec"]["nodeName"] for p in pods} == {FAKE_NODE}
        assert {p["status"]["phase"] for p in pods} == {"Running"}
        # Scaling down deletes a Pod; kwok finalizes the deletion in place of a kubelet.
        k8s_cluster.kubectl("scale", "-n", namespace, "deployment/web", "--replicas=1")
        wait_for(
            "1 Pod after scaling down",
            lambda: len(get_json(k8s_cluster, "-n", namespace, "pods", "-l", "app=web")["items"]) == 1,
        )
    else:
        pods = get_json(k8s_cluster, "-n", namespace, "pods", "-l", "app=web")["items"]
        assert {p["status"]["phase"] for p in pods} == {"Pending"}, "no node without kwok"


def test_deleting_an_owner_garbage_collects_its_dependents(k8s_cluster: ControlPlane, namespace: str) -> None:
    k8s_cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    owner_uid = get_json(k8s_cluster, "-n", namespace, "configmap/owner")["metadata"]["uid"]

    def dependent(name: str, uid: str) -> dict[str, Any]:
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [owner]},
            "data": {"x": "y"},
        }

    def gone(name: str) -> Callable[[], bool]:
        def probe() -> bool:
            r = k8s_cluster.kubectl("get", "configmap", name, "-n", namespace, check=False)
            return r.returncode != 0 and "NotFound" in r.stderr

        return probe

    k8s_cluster.apply(dependent("dependent", owner_uid), namespace=namespace)
    # An orphan (its owner's uid exists nowhere), created after it: once the GC has collected the
    # orphan it has looked at both, and the dependent of a live owner must have survived.
    k8s_cluster.apply(dependent("orphan", str(uuid.uuid4())), namespace=namespace)
    wait_for("the garbage collector to delete the orphan", gone("orphan"))
    assert get_json(k8s_cluster, "-n", namespace, "configmap/dependent")["data"] == {"x": "y"}

    k8s_cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")
    wait_for("the garbage collector to delete the dependent", gone("dependent"))


def _raw_get(cluster: ControlPlane, path: str, token: str) -> int:
    req = urllib.request.Request(cluster.server + path, headers={"Authorization": f"Bearer {token}"})
    ctx = cluster.ssl_context(client_cert=False)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


def test_rbac_is_enforced_for_a_service_account_token(k8s_cluster: ControlPlane, namespace: str) -> None:
    k8s_cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    k8s_cluster.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps"
    )
    k8s_cluster.kubectl(
        "create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    k8s_cluster.kubectl("create", "configmap", "visible", "-n", namespace, "--from-literal=k=v")
    k8s_cluster.kubectl("create", "secret", "generic", "hidden", "-n", namespace, "--from-literal=k=v")

    token = k8s_cluster.kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    as_reader = k8s_cluster.user_kubeconfig(f"{namespace}-reader", token=token)

    who = json.loads(k8s_cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=as_reader).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    # Granted: get/list ConfigMaps in its namespace.
    listed = json.loads(
        k8s_cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "json", kubeconfig=as_reader).stdout
    )
    assert "visible" in {i["metadata"]["name"] for i in listed["items"]}
    assert _raw_get(k8s_cluster, f"/api/v1/namespaces/{namespace}/configmaps/visible", token) == 200

    # Not granted: Secrets, writes, other namespaces, cluster-scoped resources.
    assert _raw_get(k8s_cluster, f"/api/v1/namespaces/{namespace}/secrets/hidden", token) == 403
    assert _raw_get(k8s_cluster, "/api/v1/namespaces/default/configmaps", token) == 403
    assert _raw_get(k8s_cluster, "/api/v1/nodes", token) == 403
    denied = k8s_cluster.kubectl(
        "create",
        "configmap",
        "nope",
        "-n",
        namespace,
        "--from-literal=a=b",
        kubeconfig=as_reader,
        check=False,
    )
    assert denied.returncode != 0
    assert "configmaps is forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    # A garbage token is not authenticated at all.
    assert _raw_get(k8s_cluster, f"/api/v1/namespaces/{namespace}/configmaps", "not-a-token") == 401


class _Webhook:
    """A validating admission webhook over HTTPS on 127.0.0.1 that rejects ConfigMaps with data.forbidden."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.reviews: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.reviews.append(review)
                request = review["request"]
                data = (request.get("object") or {}).get("data") or {}
                response: dict[str, Any] = {"uid": request["uid"], "allowed": "forbidden" not in data}
                if not response["allowed"]:
                    response["status"] = {
                        "code": 422,
                        "message": f"statestore-test says no to {data['forbidden']}",
                    }
                body = json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[_Webhook, CertificateAuthority]]:
    # A CA of the test's own, unrelated to the cluster CA: the API server must trust it via caBundle.
    ca = CertificateAuthority.create(tmp_path, "webhook-ca")
    cert, key = ca.issue(tmp_path, "webhook", common_name="127.0.0.1", hosts=["127.0.0.1"], server=True)
    with _Webhook(cert, key) as hook:
        yield hook, ca


def test_validating_webhook_is_called_and_its_rejection_reaches_the_client(
    k8s_cluster: ControlPlane, namespace: str, webhook: tuple[_Webhook, CertificateAuthority]
) -> None:
    hook, ca = webhook
    config_name = f"statestore-test-{namespace}"
    k8s_cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": config_name},
            "webhooks": [
                {
                    "name": "configmaps.test.statestore.dev",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{hook.port}/validate",
                        "caBundle": base64.b64encode(ca.cert_pem).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    # Only this test's namespace, so other tests never depend on this server.
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
    )
    try:
        # The API server picks up new webhook configurations asynchronously: probe until it calls us.
        counter = iter(range(1_000_000))

        def rejected() -> str | None:
            r = k8s_cluster.kubectl(
                "create", "configmap", f"bad-{next(counter)}", "-n", namespace,
                "--from-literal=forbidden=plutonium", check=False,
            )  # fmt: skip
            return r.stderr if r.returncode != 0 else None

        stderr = wait_for("the webhook to reject a ConfigMap", rejected, timeout=30)
        assert "statestore-test says no to plutonium" in stderr
        assert "configmaps.test.statestore.dev" in stderr  # the API server names the denying webhook

        k8s_cluster.kubectl("create", "configmap", "good", "-n", namespace, "--from-literal=fine=yes")
        reviewed = [r["request"] for r in hook.reviews]
        assert any(
            r["name"] == "good" and r["namespace"] == namespace and r["operation"] == "CREATE"
            for r in reviewed
        )
        assert all(r["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"} for r in reviewed)
        assert hook.reviews[-1]["request"]["userInfo"]["username"] == k8s_cluster.admin_user
    finally:
        k8s_cluster.kubectl(
            "delete", "validatingwebhookconfiguration", config_name, "--ignore-not-found", check=False
        )


def test_an_unauthenticated_client_is_rejected(k8s_cluster: ControlPlane) -> None:
    req = urllib.request.Request(k8s_cluster.server + "/api/v1/namespaces")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10, context=k8s_cluster.ssl_context(client_cert=False))
    assert err.value.code == 403  # anonymous is authenticated as system:anonymous, then denied by RBAC


def test_a_kubectl_failure_raises_with_stderr(k8s_cluster: ControlPlane) -> None:
    with pytest.raises(KubectlError, match="NotFound"):
        k8s_cluster.kubectl("get", "namespace", "does-not-exist-" + uuid.uuid4().hex[:6])
    assert k8s_cluster.kubectl("get", "namespace", "nope-nope", check=False).returncode != 0
