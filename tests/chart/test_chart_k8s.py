"""The chart against a real API server: dry runs of every option set, install/upgrade, and the operator
running with exactly the arguments and identity the chart gives it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_testing import (
    CHART,
    CHART_CRD,
    EXAMPLES,
    VALUE_SETS,
    Manifest,
    example_components,
    forbidden_lines,
    helm,
    one,
    operator_container,
    template,
    values_args,
)

from fixtures.k8s import ControlPlane
from fixtures.operator_process import OperatorProcess, WaitTimeout, wait_for
from fixtures.sidecar import free_port

pytestmark = pytest.mark.k8s


def release_name() -> str:
    # Cluster-scoped objects (ClusterRoles, the webhook configuration) carry the release name.
    return f"r{uuid.uuid4().hex[:8]}"


def dump(docs: list[Manifest]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@contextlib.contextmanager
def extra_namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@contextlib.contextmanager
def installed(
    cluster: ControlPlane, home: Path, release: str, namespace: str, values: dict[str, Any]
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`helm install`; always `helm uninstall` afterwards (the webhook must not outlive the test)."""
    result = helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *values_args(values, home, release),
        home=home,
        kubeconfig=cluster.kubeconfig,
    )
    try:
        yield result
    finally:
        helm(
            "uninstall",
            release,
            "--namespace",
            namespace,
            home=home,
            kubeconfig=cluster.kubeconfig,
            check=False,
        )


def can_i(cluster: ControlPlane, sa: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


# --- the API server accepts what the chart renders --------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_pass_server_side_dry_run(
    name: str, chart_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    values = dict(VALUE_SETS[name])
    if "watchNamespaces" in values:
        values["watchNamespaces"] = [namespace, "default"]  # RoleBindings need existing namespaces
    docs = template(values, home=tmp_path, release=release_name(), namespace=namespace)
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(dump(docs))
    # Pod Security admission warns about a Deployment whose pods would break the "restricted" profile.
    chart_cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    result = chart_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "--server-side", "-f", str(manifest)
    )
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
    assert "PodSecurity" not in result.stderr, result.stderr
    # The chart's CRD too (it is the one already installed here, so this is an unchanged apply).
    chart_cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(CHART_CRD))


# --- install, upgrade, permissions ----------------------------------------------------------------


def test_install_upgrade_keeps_the_generated_certificate(
    chart_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = release_name()
    fullname = f"{release}-statestore-operator"
    config_name = f"{fullname}.{namespace}.statestore.dapr.io"
    with installed(chart_cluster, tmp_path, release, namespace, {}) as install:
        assert "STATUS: deployed" in install.stdout
        notes = install.stdout.split("NOTES:", 1)[1]
        assert "every namespace" in notes and "kubectl apply -f examples/" in notes
        for kind, name in (
            ("deployment", fullname),
            ("serviceaccount", fullname),
            ("service", f"{fullname}-webhook"),
            ("service", f"{fullname}-metrics"),
            ("secret", f"{fullname}-webhook-tls"),
        ):
            chart_cluster.kubectl("get", kind, name, "-n", namespace)
        chart_cluster.kubectl("get", "clusterrolebinding", fullname, f"{fullname}-discovery")
        secret = chart_cluster.kubectl_json("get", "secret", f"{fullname}-webhook-tls", "-n", namespace)
        config = chart_cluster.kubectl_json("get", "validatingwebhookconfiguration", config_name)
        ca_bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        assert ca_bundle == secret["data"]["ca.crt"]
        deployment = chart_cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
        checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/webhook-cert"]

        helm(
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "resyncSeconds=30",
            home=tmp_path,
            kubeconfig=chart_cluster.kubeconfig,
        )
        after = chart_cluster.kubectl_json("get", "secret", f"{fullname}-webhook-tls", "-n", namespace)
        assert after["data"] == secret["data"], "helm upgrade must not regenerate the certificate"
        config = chart_cluster.kubectl_json("get", "validatingwebhookconfiguration", config_name)
        assert config["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle
        deployment = chart_cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
        template_ = deployment["spec"]["template"]
        assert template_["metadata"]["annotations"]["checksum/webhook-cert"] == checksum
        assert "--resync-seconds=30" in template_["spec"]["containers"][0]["args"]

        # The documented rotation: delete the Secret, upgrade; everything follows the new CA.
        chart_cluster.kubectl("delete", "secret", f"{fullname}-webhook-tls", "-n", namespace)
        helm(
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            home=tmp_path,
            kubeconfig=chart_cluster.kubeconfig,
        )
        rotated = chart_cluster.kubectl_json("get", "secret", f"{fullname}-webhook-tls", "-n", namespace)
        assert rotated["data"]["ca.crt"] != secret["data"]["ca.crt"]
        config = chart_cluster.kubectl_json("get", "validatingwebhookconfiguration", config_name)
        assert config["webhooks"][0]["clientConfig"]["caBundle"] == rotated["data"]["ca.crt"]
        deployment = chart_cluster.kubectl_json("get", "deployment", fullname, "-n", namespace)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["checksum/webhook-cert"] != checksum, "the operator restarts with the new cert"
    assert (
        chart_cluster.kubectl("get", "validatingwebhookconfiguration", config_name, check=False).returncode
        != 0
    )


def test_cluster_wide_permissions(chart_cluster: ControlPlane, namespace: str, tmp_path: Path) -> None:
    release = release_name()
    sa = f"system:serviceaccount:{namespace}:{release}-statestore-operator"
    with installed(chart_cluster, tmp_path, release, namespace, {}):
        # Secrets: never listed or watched, in any namespace; `get` by name in every namespace.
        assert not can_i(chart_cluster, sa, "list", "secrets", "--all-namespaces")
        assert not can_i(chart_cluster, sa, "list", "secrets", "-n", "default")
        assert not can_i(chart_cluster, sa, "watch", "secrets", "--all-namespaces")
        assert can_i(chart_cluster, sa, "get", "secrets", "-n", "default")
        # What the operator does, everywhere.
        for verb in ("get", "list", "watch", "patch"):
            assert can_i(chart_cluster, sa, verb, "components.dapr.io", "--all-namespaces")
        assert can_i(
            chart_cluster, sa, "patch", "components.dapr.io", "--subresource=status", "-n", "default"
        )
        assert can_i(chart_cluster, sa, "create", "deployments.apps", "-n", "default")
        assert can_i(chart_cluster, sa, "create", "events", "-n", "default")
        # Nothing it does not need.
        assert not can_i(chart_cluster, sa, "deletecollection", "deployments.apps", "-n", "default")
        assert not can_i(chart_cluster, sa, "delete", "components.dapr.io", "-n", "default")
        assert not can_i(chart_cluster, sa, "create", "validatingwebhookconfigurations")
        assert not can_i(chart_cluster, sa, "create", "pods", "-n", "default")
        # Secrets: create (a generated API token), never change or delete one.
        assert can_i(chart_cluster, sa, "create", "secrets", "-n", "default")
        for verb in ("update", "patch", "delete", "deletecollection"):
            assert not can_i(chart_cluster, sa, verb, "secrets", "-n", "default")
        # The NetworkPolicy of a scoped Component; never a whole collection, never cluster-wide lists.
        for verb in ("get", "create", "patch", "delete"):
            assert can_i(chart_cluster, sa, verb, "networkpolicies.networking.k8s.io", "-n", "default")
        assert not can_i(chart_cluster, sa, "list", "networkpolicies.networking.k8s.io", "--all-namespaces")
        # Claims: created and patched (their ownerReference), never deleted; budgets and autoscalers too.
        for verb in ("get", "create", "patch"):
            assert can_i(chart_cluster, sa, verb, "persistentvolumeclaims", "-n", "default")
        assert not can_i(chart_cluster, sa, "delete", "persistentvolumeclaims", "-n", "default")
        for resource in ("poddisruptionbudgets.policy", "horizontalpodautoscalers.autoscaling"):
            for verb in ("get", "create", "patch", "delete"):
                assert can_i(chart_cluster, sa, verb, resource, "-n", "default")


def test_watch_namespaces_permissions(chart_cluster: ControlPlane, namespace: str, tmp_path: Path) -> None:
    release = release_name()
    sa = f"system:serviceaccount:{namespace}:{release}-statestore-operator"
    with (
        extra_namespace(chart_cluster) as watched,
        installed(chart_cluster, tmp_path, release, namespace, {"watchNamespaces": [watched]}),
    ):
        assert not can_i(chart_cluster, sa, "list", "secrets", "--all-namespaces")
        assert not can_i(chart_cluster, sa, "list", "secrets", "-n", watched)
        assert can_i(chart_cluster, sa, "get", "secrets", "-n", watched)
        # Not even `get` outside the watched namespaces (its own namespace included).
        assert not can_i(chart_cluster, sa, "get", "secrets", "-n", "default")
        assert not can_i(chart_cluster, sa, "get", "secrets", "-n", namespace)
        assert can_i(chart_cluster, sa, "create", "secrets", "-n", watched)
        assert not can_i(chart_cluster, sa, "create", "secrets", "-n", "default")
        assert can_i(chart_cluster, sa, "create", "networkpolicies.networking.k8s.io", "-n", watched)
        assert not can_i(chart_cluster, sa, "create", "networkpolicies.networking.k8s.io", "-n", "default")
        assert can_i(chart_cluster, sa, "patch", "components.dapr.io", "-n", watched)
        assert not can_i(chart_cluster, sa, "list", "components.dapr.io", "--all-namespaces")
        assert not can_i(chart_cluster, sa, "patch", "components.dapr.io", "-n", "default")
        assert not can_i(chart_cluster, sa, "create", "deployments.apps", "-n", "default")


# --- the operator, as the chart runs it ---------------------------------------------------------------


class ChartOperator(OperatorProcess):
    """`statestore-operator` started with the chart's rendered args and env, as its ServiceAccount.

    The only substitutions are what a local process cannot take from a pod: the mounted certificate
    paths become files issued by the cluster CA, and the listen addresses/ports become free loopback
    ports (the pod's 0.0.0.0:8080/9090/9443 could clash with anything on this machine).
    """

    def __init__(
        self, container: Manifest, kubeconfig: Path, workdir: Path, ca_cert: tuple[Path, Path]
    ) -> None:
        self.rendered_args: list[str] = list(container["args"])
        self.rendered_env: list[dict[str, Any]] = list(container.get("env") or [])
        super().__init__(workdir / "operator.log")
        self.kubeconfig = kubeconfig
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        cert, key = ca_cert
        self.substitutions = {
            "--webhook-cert": str(cert),
            "--webhook-key": str(key),
            "--webhook-address": "127.0.0.1",
            "--webhook-port": str(self.webhook_port),
            "--metrics-address": "127.0.0.1",
            "--metrics-port": str(self.metrics_port),
            "--liveness": self.liveness_url,
        }

    def args(self) -> list[str]:
        out = []
        for item in self.rendered_args:
            flag, sep, _ = item.partition("=")
            out.append(f"{flag}={self.substitutions[flag]}" if sep and flag in self.substitutions else item)
        return out

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.log.parent),
            "KUBECONFIG": str(self.kubeconfig),
        }
        for item in self.rendered_env:
            assert "value" in item, f"only literal env values can be reproduced locally: {item}"
            env[item["name"]] = str(item["value"])
        return env

    def start(self) -> None:
        self.launch(self.args(), self.env())


def conditions(cluster: ControlPlane, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    result = cluster.kubectl("get", "components.dapr.io", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    status = json.loads(result.stdout).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def actor_store(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "state.sqlite",
            "version": "v1",
            "metadata": [
                {"name": "connectionString", "value": f"{name}.db"},
                {"name": "actorStateStore", "value": "true"},
            ],
        },
    }


def test_operator_with_the_charts_args_identity_and_webhook(
    chart_cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster = chart_cluster
    release = release_name()
    with extra_namespace(cluster) as watched:
        values = {"watchNamespaces": [watched]}
        docs = template(values, home=tmp_path, release=release, namespace=namespace)
        container = operator_container(docs)
        sa_name = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        config = one(docs, "ValidatingWebhookConfiguration")

        with installed(cluster, tmp_path, release, namespace, values):
            # The chart's ServiceAccount, with a token like the one a pod would get.
            token = cluster.kubectl(
                "create", "token", sa_name, "-n", namespace, "--duration=1h"
            ).stdout.strip()
            kubeconfig = cluster.user_kubeconfig(f"system:serviceaccount:{namespace}:{sa_name}", token=token)
            # The webhook's serving cert, from the test CA; the API server calls 127.0.0.1 directly.
            cert = cluster.ca.issue(
                tmp_path, "webhook", common_name="127.0.0.1", hosts=["127.0.0.1", "localhost"], server=True
            )
            operator = ChartOperator(container, kubeconfig, tmp_path, cert)
            # The chart's webhook configuration, pointed at the local process instead of the Service.
            (hook,) = config["webhooks"]
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{operator.webhook_port}{path}",
                "caBundle": base64.b64encode(cluster.ca.cert_pem).decode(),
            }
            operator.start()
            try:
                # replace, not apply: apply would merge the url into the Service reference.
                cluster.kubectl("replace", "-f", "-", input=json.dumps(config))
                _check_operator(cluster, operator, watched)
            finally:
                operator.stop()
            forbidden = forbidden_lines(operator.output())
            assert not forbidden, "the chart's RBAC is not enough:\n" + "\n".join(forbidden)


def _check_operator(cluster: ControlPlane, operator: ChartOperator, watched: str) -> None:
    examples = list(example_components())
    assert examples, "examples/ has no state store Component"
    cluster.kubectl("apply", "-n", watched, "-f", str(EXAMPLES))
    for component in examples:
        name = component["metadata"]["name"]

        def validated(name: str = name) -> dict[str, Any] | None:
            cond = conditions(cluster, watched, name).get("Validated")
            return cond if cond and cond["status"] == "True" else None

        try:
            wait_for(f"{name}: Validated=True", validated, timeout=90)
        except WaitTimeout:
            pytest.fail(
                f"{name}: conditions {conditions(cluster, watched, name)}\n"
                f"operator log:\n{operator.output()[-4000:]}"
            )
        # What the operator rendered for it, with the chart's --image.
        deployment = cluster.kubectl_json("get", "deployment", f"statestore-{name}", "-n", watched)
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "ghcr.io/statestore-operator/statestore-sidecar:0.1.0"
        cluster.kubectl("get", "service,configmap", f"statestore-{name}", "-n", watched)

    # A generated API token (Secret `create`) and a scoped NetworkPolicy (apply, then `delete`).
    guarded = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "guarded", "annotations": {"statestore.dapr.io/api-token": "generate"}},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
        "scopes": ["checkout"],
    }
    cluster.apply(guarded, namespace=watched)

    def exists(kind: str, name: str) -> bool:
        return cluster.kubectl("get", kind, name, "-n", watched, check=False).returncode == 0

    wait_for("the generated token Secret", lambda: exists("secret", "statestore-guarded-api-token"))
    wait_for("the NetworkPolicy", lambda: exists("networkpolicy", "statestore-guarded"))
    wait_for("the Deployment", lambda: exists("deployment", "statestore-guarded"))
    cluster.apply({**guarded, "scopes": []}, namespace=watched)
    wait_for("the NetworkPolicy to be deleted", lambda: not exists("networkpolicy", "statestore-guarded"))

    # Claims (the SQLite example's), disruption budgets and autoscalers, created and deleted.
    claims = [f"statestore-{c['metadata']['name']}" for c in examples if c["spec"]["type"] == "state.sqlite"]
    assert claims, "examples/ has no SQLite Component"
    wait_for("the data claims", lambda: all(exists("pvc", claim) for claim in claims))
    scaled = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "scaled",
            "annotations": {
                "statestore.dapr.io/replicas": "2",
                "statestore.dapr.io/autoscale-max-replicas": "4",
            },
        },
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [{"name": "redisHost", "value": "r:6379"}],
        },
    }
    cluster.apply(scaled, namespace=watched)
    wait_for("the PodDisruptionBudget", lambda: exists("pdb", "statestore-scaled"))
    wait_for("the HorizontalPodAutoscaler", lambda: exists("hpa", "statestore-scaled"))
    cluster.apply({**scaled, "metadata": {"name": "scaled", "annotations": {}}}, namespace=watched)
    wait_for("the budget deleted", lambda: not exists("pdb", "statestore-scaled"))
    wait_for("the autoscaler deleted", lambda: not exists("hpa", "statestore-scaled"))

    # The webhook, through the chart's configuration: one actor store is fine, a second is refused.
    cluster.apply(actor_store("actors-one"), namespace=watched)
    wait_for(
        "actors-one: Validated=True",
        lambda: (conditions(cluster, watched, "actors-one").get("Validated") or {}).get("status") == "True",
    )
    second = cluster.kubectl(
        "apply", "-n", watched, "-f", "-", input=json.dumps(actor_store("actors-two")), check=False
    )
    assert second.returncode != 0, f"a second actor state store was admitted:\n{second.stdout}"
    assert "admission webhook" in second.stderr and "denied the request" in second.stderr, second.stderr
    assert "actors-one" in second.stderr, second.stderr
    assert (
        cluster.kubectl("get", "components.dapr.io", "actors-two", "-n", watched, check=False).returncode != 0
    )

    # A Component that stops being a state store: the operator deletes what it made for it (`delete`).
    patch = json.dumps({"spec": {"type": "pubsub.in-memory"}})
    cluster.kubectl("patch", "components.dapr.io", "actors-one", "-n", watched, "--type=merge", "-p", patch)
    for kind in ("deployment", "service", "configmap"):

        def deleted(kind: str = kind) -> bool:
            found = cluster.kubectl("get", kind, "statestore-actors-one", "-n", watched, check=False)
            return found.returncode != 0

        wait_for(f"{kind} statestore-actors-one deleted", deleted)
