"""The webhook's serving certificate is re-read when its files change (cert-manager renewal), no restart."""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_testing import Kube, wait_for

from fixtures.sidecar import free_port

pytestmark = pytest.mark.k8s


def mount_like_a_secret_volume(folder: Path, files: dict[str, bytes]) -> None:
    """Write files the way the kubelet updates a Secret volume: a new directory, then one atomic
    rename of the `..data` symlink, so a reader never sees a new certificate with an old key."""
    version = folder / f"..{uuid.uuid4().hex[:8]}"
    version.mkdir()
    for name, data in files.items():
        (version / name).write_bytes(data)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, folder / "..data")
    for name in files:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def served_certificate(port: int, ca: Path) -> bytes | None:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


def der(pem: bytes) -> bytes:
    first = pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first.decode())


def review(namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "dapr.io", "version": "v1alpha1", "kind": "Component"},
            "resource": {"group": "dapr.io", "version": "v1alpha1", "resource": "components"},
            "requestKind": {"group": "dapr.io", "version": "v1alpha1", "kind": "Component"},
            "requestResource": {"group": "dapr.io", "version": "v1alpha1", "resource": "components"},
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def test_renewed_webhook_certificate_is_served_without_a_restart(
    kube: Kube, start_operator: Any, tmp_path: Path
) -> None:
    ca = kube.cluster.ca_cert
    folder = tmp_path / "webhook-tls"
    folder.mkdir()

    def issue(name: str) -> dict[str, bytes]:
        cert, key = kube.cluster.ca.issue(
            tmp_path, name, common_name="127.0.0.1", hosts=["127.0.0.1"], server=True
        )
        return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}

    first = issue("webhook-1")
    mount_like_a_secret_volume(folder, first)
    port = free_port()
    operator = start_operator(
        "--webhook-address",
        "127.0.0.1",
        "--webhook-port",
        str(port),
        "--webhook-cert",
        str(folder / "tls.crt"),
        "--webhook-key",
        str(folder / "tls.key"),
        "--webhook-config-name=",  # serve only, as the chart runs it
        "--webhook-cert-reload-seconds",
        "1",
    )
    wait_for("the first certificate", lambda: served_certificate(port, ca) == der(first["tls.crt"]))

    bad = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bad", "namespace": kube.ns},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []},
    }

    def judged() -> bool:
        url = f"https://127.0.0.1:{port}/validate-component"
        answer = httpx.post(url, json=review(kube.ns, bad), verify=ssl.create_default_context(cafile=str(ca)))
        assert answer.status_code == 200, answer.text
        response = answer.json()["response"]
        return response["allowed"] is False and "redisHost" in response["status"]["message"]

    assert judged()

    # cert-manager renews: the Secret volume flips to a new pair; the operator keeps running.
    second = issue("webhook-2")
    assert der(second["tls.crt"]) != der(first["tls.crt"])
    mount_like_a_secret_volume(folder, second)
    wait_for(
        "the renewed certificate", lambda: served_certificate(port, ca) == der(second["tls.crt"]), timeout=30
    )
    assert judged()
    assert operator.proc is not None and operator.proc.poll() is None

    # A pair that cannot be served (a key of another certificate) stops the operator: its pod restarts,
    # rather than running on without a webhook.
    mount_like_a_secret_volume(
        folder, {"tls.crt": issue("webhook-3")["tls.crt"], "tls.key": second["tls.key"]}
    )
    proc = operator.proc
    wait_for("the operator to exit", lambda: proc.poll() is not None, timeout=30)
    assert proc.returncode != 0
    assert "key values mismatch" in operator.output()
