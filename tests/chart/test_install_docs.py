"""docs/install.md and the kind targets, exercised as far as possible without Docker.

The blocks of docs/install.md preceded by `<!-- tested: <kind> -->` run here as written: `install`,
`upgrade` and `uninstall` against the test control plane with the real helm and kubectl, and every
`values` block renders and passes a server-side dry run. The Docker/kind steps are checked with
`make -n` (what they would run) instead.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from chart_testing import CHART, ROOT, helm_binary, helm_env, template

from fixtures.docs import documented_blocks
from fixtures.k8s import ControlPlane

DOC = ROOT / "docs" / "install.md"


def run_block(cluster: ControlPlane, script: str, home: Path) -> subprocess.CompletedProcess[str]:
    """A documented bash block, run from the repository root with the test cluster as the context."""
    env = helm_env(home, cluster.kubeconfig)
    env["PATH"] = f"{helm_binary().parent}{os.pathsep}{env.get('PATH', '')}"
    env["KUBECACHEDIR"] = str(home / "kubectl-cache")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{script}\nfailed:\n{result.stderr}{result.stdout}"
    return result


# --- what needs no cluster ----------------------------------------------------------------------------


def test_documented_image_references_match_the_chart_and_dockerfiles() -> None:
    text = DOC.read_text()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"TAG={chart['appVersion']}" in text
    for key in ("image", "stateApi"):
        repository = (values[key]["image"] if key == "stateApi" else values[key])["repository"]
        assert f"`{repository}`" in text
    for dockerfile in ("images/operator.Dockerfile", "images/sidecar.Dockerfile"):
        assert f"`{dockerfile}`" in text and f"-f {dockerfile}" in text
        base = re.search(r"^ARG BASE=(\S+)", (ROOT / dockerfile).read_text(), re.M)
        assert base and f"`{base[1]}`" in text


def test_readme_points_to_the_install_docs() -> None:
    """The README's install commands are the tested ones of docs/install.md."""
    readme = (ROOT / "README.md").read_text()
    assert "docs/install.md" in readme
    (install,) = documented_blocks("install.md", "install")
    assert " ".join(install.replace("\\\n", " ").split()) in " ".join(readme.split())
    assert "kubectl apply -f examples/" in readme


def make_dry_run(*targets: str) -> list[str]:
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *targets], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # Join the recipe lines' backslash continuations.
    return [line.strip() for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def test_kind_targets_build_load_install_and_apply() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    operator_image = f"{values['image']['repository']}:{app_version}"
    sidecar_image = f"{values['stateApi']['image']['repository']}:{app_version}"
    kind_config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind_config["kind"] == "Cluster" and kind_config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    cluster = kind_config["name"]

    (up,) = make_dry_run("kind-up")
    assert f"kind create cluster --config kind-config.yaml --name {cluster}" in up

    steps = [shlex.split(line) for line in make_dry_run("kind-deploy")]
    commands = [" ".join(step[:2]) for step in steps]
    assert commands == ["docker build", "docker build", "kind load", "helm upgrade", "kubectl --context"]
    builds = {step[step.index("-f") + 1]: step[step.index("-t") + 1] for step in steps[:2]}
    assert builds == {
        "images/operator.Dockerfile": operator_image,
        "images/sidecar.Dockerfile": sidecar_image,
    }
    assert steps[0][-1] == steps[1][-1] == ".", "the build context is the repository root"
    load = steps[2]
    assert load[:3] == ["kind", "load", "docker-image"] and {operator_image, sidecar_image} <= set(load)
    assert load[load.index("--name") + 1] == cluster
    install = steps[3]
    assert install[2:5] == ["--install", "statestore-operator", "charts/statestore-operator"]
    assert install[install.index("--kube-context") + 1] == f"kind-{cluster}"
    assert "--wait" in install, "examples/ go through the webhook: wait for the operator first"
    assert steps[4][-3:] == ["apply", "-f", "examples/"]
    assert steps[4][2] == f"kind-{cluster}"


# --- against the control plane ------------------------------------------------------------------------


@pytest.mark.k8s
@pytest.mark.parametrize("index", range(len(documented_blocks("install.md", "values"))))
def test_documented_values_are_accepted(
    index: int, k8s_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    from chart_testing import install_third_party_crds

    values = yaml.safe_load(documented_blocks("install.md", "values")[index]) or {}
    install_third_party_crds(k8s_cluster)
    created = [
        ns
        for ns in values.get("watchNamespaces") or []
        if k8s_cluster.kubectl("get", "ns", ns, check=False).returncode
    ]
    for ns in created:
        k8s_cluster.kubectl("create", "namespace", ns)
    try:
        docs = template(values, home=tmp_path, release=f"d{uuid.uuid4().hex[:6]}", namespace=namespace)
        manifest = tmp_path / "rendered.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        result = k8s_cluster.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "--server-side", "-f", str(manifest)
        )
        assert result.stdout.count("(server dry run)") == len(docs)
    finally:
        for ns in created:
            k8s_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.k8s
def test_documented_install_upgrade_uninstall(k8s_cluster: ControlPlane, tmp_path: Path) -> None:
    (install,) = documented_blocks("install.md", "install")
    (upgrade,) = documented_blocks("install.md", "upgrade")
    (uninstall,) = documented_blocks("install.md", "uninstall")
    namespace = "statestore-system"
    try:
        out = run_block(k8s_cluster, install, tmp_path).stdout
        assert "STATUS: deployed" in out
        deployment = k8s_cluster.kubectl_json("get", "deployment", "statestore-operator", "-n", namespace)
        assert deployment["spec"]["replicas"] == 1
        k8s_cluster.kubectl("get", "crd", "components.dapr.io")
        secret = k8s_cluster.kubectl_json("get", "secret", "statestore-operator-webhook-tls", "-n", namespace)

        out = run_block(k8s_cluster, upgrade, tmp_path).stdout
        assert "has been upgraded" in out
        after = k8s_cluster.kubectl_json("get", "secret", "statestore-operator-webhook-tls", "-n", namespace)
        assert after["data"] == secret["data"]

        run_block(k8s_cluster, uninstall, tmp_path)
        gone = k8s_cluster.kubectl("get", "deployment", "statestore-operator", "-n", namespace, check=False)
        assert gone.returncode != 0
        configs = k8s_cluster.kubectl(
            "get",
            "validatingwebhookconfigurations",
            "-l",
            "app.kubernetes.io/instance=statestore-operator",
            "-o",
            "name",
        ).stdout
        assert not configs.strip(), "the webhook configuration must go with the release"
        k8s_cluster.kubectl("get", "crd", "components.dapr.io")  # Helm keeps CRDs
    finally:
        subprocess.run(
            [
                str(helm_binary()),
                "uninstall",
                "statestore-operator",
                "--namespace",
                namespace,
                "--ignore-not-found",
            ],
            env=helm_env(tmp_path, k8s_cluster.kubeconfig),
            capture_output=True,
            check=False,
        )
        k8s_cluster.kubectl(
            "delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False
        )
