"""The images built and run: the state API image answers the README walkthrough, the operator image
validates examples/ on the test control plane; both as their own non-root user, read-only root."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from image_testing import OPERATOR_IMAGE, SIDECAR_IMAGE, UID, Container, run

from fixtures.k8s import ControlPlane
from fixtures.walkthrough import ROOT, check_walkthrough, make_run_args
from statestore_testing.ports import free_port
from statestore_testing.waiting import WaitTimeout, wait_for

pytestmark = [pytest.mark.images, pytest.mark.usefixtures("images")]

# Where the operator's Deployments mount the Component (read-only) and the data volume.
COMPONENTS_DIR = "/etc/statestore/components"
DATA_DIR = "/var/lib/statestore"


def answers(url: str, status: int) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == status)
    except OSError:
        return False


def wait_serving(container: Container, url: str, status: int) -> None:
    def up() -> bool:
        if not container.running():
            pytest.fail(f"the container exited:\n{container.logs()}")
        return answers(url, status)

    wait_for(f"{url} in {container.name}", up, timeout=60)


def test_sidecar_image_serves_the_walkthrough(tmp_path: Path) -> None:
    from statestore_operator import render

    assert (render.COMPONENTS_DIR, render.DATA_DIR) == (COMPONENTS_DIR, DATA_DIR)
    # The pod's volumes: examples/ as the ConfigMap (read-only) and a writable data directory.
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, UID, UID)  # as the pod's fsGroup makes the emptyDir the user's
    else:
        data.chmod(0o777)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    port = free_port()
    args = [COMPONENTS_DIR if a == "examples" else a for a in make_run_args()]
    options = [
        f"--volume={tmp_path / 'examples'}:{COMPONENTS_DIR}:ro",
        f"--volume={data}:{DATA_DIR}",
        f"--workdir={DATA_DIR}",
    ]
    # Both ports chosen here: the host's network is shared, and 50001 may be another server's.
    ports = ["--dapr-http-port", str(port), "--dapr-grpc-port", str(free_port())]
    with run(SIDECAR_IMAGE, options, [*args, *ports]) as container:
        wait_serving(container, f"http://127.0.0.1:{port}/v1.0/healthz", 204)
        assert container.exec("id", "-u").strip() == str(UID)
        check_walkthrough(port, tmp_path)
        # Nothing but the volumes is writable: the image's own files are not.
        refused = container.exec("sh", "-c", "touch /opt/statestore/x 2>&1 || true")
        assert "Read-only file system" in refused
    # The SQLite file of examples/statestore.yaml, relative to the working directory, on the volume.
    assert (data / ".data" / "state.db").stat().st_size > 0


def _conditions(cluster: ControlPlane, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    body = cluster.kubectl_json("get", "components.dapr.io", name, "-n", namespace)
    status: dict[str, Any] = body.get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


@pytest.mark.k8s
def test_operator_image_validates_the_examples(
    k8s_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    k8s_cluster.kubectl("apply", "-f", str(ROOT / "crds" / "components.dapr.io.yaml"))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/components.dapr.io", "--timeout=60s")
    # The admin kubeconfig, readable by the image's user, mounted as a Secret would be.
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(k8s_cluster.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)
    liveness = free_port()
    options = [
        f"--volume={kubeconfig}:/etc/statestore/kubeconfig:ro",
        "--env=KUBECONFIG=/etc/statestore/kubeconfig",
    ]
    args = [
        f"--namespace={namespace}",
        "--standalone",
        f"--image={SIDECAR_IMAGE}",
        "--resync-seconds=3",
        f"--liveness=http://127.0.0.1:{liveness}/healthz",
    ]
    with run(OPERATOR_IMAGE, options, args) as container:
        wait_serving(container, f"http://127.0.0.1:{liveness}/healthz", 200)
        assert container.exec("id", "-u").strip() == str(UID)
        k8s_cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
        names = [
            doc["metadata"]["name"]
            for path in sorted((ROOT / "examples").glob("*.yaml"))
            for doc in _yaml_docs(path)
            if doc.get("kind") == "Component"
        ]
        assert names
        for name in names:

            def validated(name: str = name) -> bool:
                if not container.running():
                    pytest.fail(f"the operator exited:\n{container.logs()}")
                return (_conditions(k8s_cluster, namespace, name).get("Validated") or {}).get(
                    "status"
                ) == "True"

            try:
                wait_for(f"{name}: Validated=True", validated, timeout=120)
            except WaitTimeout:
                pytest.fail(f"{_conditions(k8s_cluster, namespace, name)}\n{container.logs()}")
            deployment = k8s_cluster.kubectl_json("get", "deployment", f"statestore-{name}", "-n", namespace)
            pod = deployment["spec"]["template"]["spec"]
            assert pod["containers"][0]["image"] == SIDECAR_IMAGE
        assert answers(f"http://127.0.0.1:{liveness}/healthz", 200)
        assert "Traceback" not in container.logs(), container.logs()


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
