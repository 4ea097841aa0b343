"""The Helm chart rendered offline (`helm lint`, `helm template`): structure, wiring and least privilege.

The API server's verdict on the same manifests is in test_chart_k8s.py.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_testing import (
    CHART,
    CHART_CRD,
    ROOT,
    ROOT_CRD,
    VALUE_SETS,
    Manifest,
    by_kind,
    helm,
    one,
    operator_container,
    template,
    values_args,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def render(home: Path, values: dict[str, Any] | None = None, **kwargs: Any) -> list[Manifest]:
    return template(values or {}, home=home, **kwargs)


def args_of(docs: list[Manifest]) -> list[str]:
    return list(operator_container(docs)["args"])


def arg(docs: list[Manifest], flag: str) -> str | None:
    for item in args_of(docs):
        if item.startswith(flag + "="):
            return item.split("=", 1)[1]
    return None


# --- chart metadata ---------------------------------------------------------------------------------


@pytest.mark.helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint(name: str, home: Path) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(VALUE_SETS[name], home), home=home)
    assert "0 chart(s) failed" in result.stdout


def test_crd_in_chart_is_the_repository_crd() -> None:
    """crds/components.dapr.io.yaml is the source; the chart carries an identical copy."""
    assert CHART_CRD.read_bytes() == ROOT_CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(ROOT)} differs from {ROOT_CRD.relative_to(ROOT)}: "
        f"cp {ROOT_CRD.relative_to(ROOT)} {CHART_CRD.relative_to(ROOT)}"
    )


def test_chart_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"], "image tags default to appVersion"
    assert chart["kubeVersion"].startswith(">=1.29")


def _documented_keys(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, key, documented) for each key of values.yaml that must carry a comment.

    A key is documented by the comment line right above it. A key whose comment starts with `# --`
    documents its whole (free-form) value, so the keys under it need no comment of their own; a
    plain section header (e.g. `image:`) needs none, but every key under it does.
    """
    lines = text.splitlines()
    exempt_until: int | None = None  # indentation of a `# --` documented block being skipped
    for number, line in enumerate(lines, 1):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        if exempt_until is not None:
            if indent > exempt_until:
                continue
            exempt_until = None
        previous = next((p.strip() for p in reversed(lines[: number - 1]) if p.strip()), "")
        documented = previous.startswith("#")
        is_section = rest == "" and not documented
        if rest == "" and previous.startswith("# --"):
            exempt_until = indent
        if not is_section:
            yield number, key, documented


def test_every_value_is_commented() -> None:
    text = (CHART / "values.yaml").read_text()
    missing = [f"line {n}: {key}" for n, key, documented in _documented_keys(text) if not documented]
    assert not missing, f"values.yaml keys without a comment: {missing}"


@pytest.mark.helm
def test_values_schema_is_enforced(home: Path) -> None:
    for bad in (
        {"webhook": {"failurePolicy": "Sometimes"}},
        {"image": {"pullPolicy": "Never-ever"}},
        {"stateApi": {"resources": {"requests": {"cpu": "lots"}}}},
        {"stateApi": {"resources": {"requests": {"gpu": "1"}}}},
        {"stateApi": {"appIdLabel": "not a label"}},
        {"stateApi": {"drainSeconds": -1}},
        {"stateApi": {"defaultReplicas": 0}},
        {"watchNamespaces": "team-a"},
        {"webhook": {"timeoutSeconds": 60}},
        {"no-such-value": 1},
    ):
        result = helm("template", "x", str(CHART), *values_args(bad, home, "bad"), home=home, check=False)
        assert result.returncode != 0, f"{bad} was accepted"
        assert "values don't meet the specifications of the schema" in result.stderr


# --- every value set --------------------------------------------------------------------------------


@pytest.mark.helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_standard_labels_everywhere(name: str, home: Path) -> None:
    for doc in render(home, VALUE_SETS[name]):
        labels = doc["metadata"].get("labels") or {}
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "ss"


@pytest.mark.helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_args_are_operator_flags(name: str, home: Path) -> None:
    """Every argument the chart passes is one `statestore-operator` accepts, with the chart's values."""
    from statestore_operator import cli

    docs = render(home, VALUE_SETS[name])
    container = operator_container(docs)
    assert "command" not in container, "the image's ENTRYPOINT (statestore-operator) runs"
    parsed = cli.parser().parse_args(container["args"])
    assert parsed.image == "ghcr.io/statestore-operator/statestore-sidecar:0.1.0"
    assert parsed.image_pull_policy == "IfNotPresent"
    assert parsed.peering is None, "one replica, no peering"
    namespaces = VALUE_SETS[name].get("watchNamespaces") or []
    assert parsed.namespace == namespaces
    assert parsed.all_namespaces == (not namespaces)
    webhook = (VALUE_SETS[name].get("webhook") or {}).get("enabled", True)
    assert bool(parsed.webhook_cert and parsed.webhook_key) == webhook
    metrics = (VALUE_SETS[name].get("metrics") or {}).get("enabled", True)
    assert parsed.metrics_port == (9090 if metrics else 0)
    assert parsed.app_id_label == "dapr.io/app-id"
    assert cli.resources(parsed) == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }


@pytest.mark.helm
def test_state_api_values(home: Path) -> None:
    from statestore_operator import cli

    values = {
        "stateApi": {
            "appIdLabel": "example.com/app",
            "drainSeconds": 20,
            "defaultReplicas": 3,
            "resources": {"requests": {"cpu": "250m", "memory": 128}, "limits": {"cpu": 1, "memory": "1Gi"}},
        }
    }
    parsed = cli.parser().parse_args(operator_container(render(home, values))["args"])
    assert parsed.app_id_label == "example.com/app"
    assert parsed.pod_drain_seconds == 20
    assert parsed.default_replicas == 3
    assert cli.parser().parse_args(operator_container(render(home, {}))["args"]).pod_drain_seconds == 5
    assert cli.resources(parsed) == {
        "requests": {"cpu": "250m", "memory": "128"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    # null (Helm's way to drop a default) or empty: not set at all.
    unset = {"stateApi": {"resources": {"requests": {"cpu": "10m", "memory": ""}, "limits": None}}}
    parsed = cli.parser().parse_args(operator_container(render(home, unset))["args"])
    assert cli.resources(parsed) == {"requests": {"cpu": "10m"}}


@pytest.mark.helm
@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_deployment(name: str, home: Path) -> None:
    docs = render(home, VALUE_SETS[name])
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == (
        "my-operator" if name == "existing-serviceaccount" else "ss-statestore-operator"
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/statestore-operator/statestore-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The liveness probe asks the endpoint the operator is told to serve.
    liveness = arg(docs, "--liveness")
    assert liveness == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080
    # /tmp is writable, nothing else.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for path, volume in mounts.items():
        if path != "/tmp":
            assert "emptyDir" not in volumes[volume]


@pytest.mark.helm
def test_scheduling_values(home: Path) -> None:
    values = VALUE_SETS["scheduling"]
    docs = render(home, values)
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"]["example.com/team"] == "ops"
    assert pod["metadata"]["labels"]["example.com/tier"] == "control"
    container = operator_container(docs)
    assert {"name": "TZ", "value": "UTC"} in container["env"]
    assert container["args"][-1] == "--verbose"


# --- RBAC -------------------------------------------------------------------------------------------


def rules(docs: list[Manifest]) -> list[dict[str, Any]]:
    return [rule for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for rule in role["rules"]]


@pytest.mark.helm
@pytest.mark.parametrize("name", ["defaults", "watch-namespaces"])
def test_rbac_least_privilege(name: str, home: Path) -> None:
    docs = render(home, VALUE_SETS[name])
    all_rules = rules(docs)
    for rule in all_rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "admissionregistration.k8s.io" not in rule["apiGroups"], "the chart owns the webhook config"
        assert (
            "escalate" not in rule["verbs"]
            and "bind" not in rule["verbs"]
            and "impersonate" not in rule["verbs"]
        )
    secrets = [r for r in all_rules if "secrets" in r["resources"]]
    # get by name (secretKeyRef, api-token-secret) and create (a generated API token); nothing else.
    assert secrets and all(set(r["verbs"]) == {"get", "create"} for r in secrets), (
        "Secrets: get and create only"
    )

    def verbs(group: str, resource: str) -> set[str]:
        return {
            v for r in all_rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]
        }

    assert verbs("dapr.io", "components") == {"get", "list", "watch", "patch"}
    assert verbs("dapr.io", "components/status") == {"patch", "update"}
    assert {"get", "create", "patch"} <= verbs("apps", "deployments")
    assert {"list", "watch"} <= verbs("apps", "deployments")  # the operator watches its Deployments
    assert {"get", "create", "patch"} <= verbs("", "services")
    assert {"get", "create", "patch"} <= verbs("", "configmaps")
    assert "create" in verbs("", "events")
    # The NetworkPolicy of a scoped Component: applied, and deleted when the scopes go.
    assert verbs("networking.k8s.io", "networkpolicies") == {"get", "create", "patch", "delete"}
    # The data claim: created, and patched only for its ownerReference; never deleted by the operator.
    assert verbs("", "persistentvolumeclaims") == {"get", "create", "patch"}
    assert verbs("policy", "poddisruptionbudgets") == {"get", "create", "patch", "delete"}
    assert verbs("autoscaling", "horizontalpodautoscalers") == {"get", "create", "patch", "delete"}
    for resource in ("deployments", "services", "configmaps", "networkpolicies"):
        group = {"deployments": "apps", "networkpolicies": "networking.k8s.io"}.get(resource, "")
        # `delete` for a Component that stops being a state store; never a whole collection.
        assert "delete" in verbs(group, resource)
        assert "deletecollection" not in verbs(group, resource)


@pytest.mark.helm
def test_rbac_cluster_wide_mode(home: Path) -> None:
    docs = render(home)
    assert not by_kind(docs, "RoleBinding")
    bindings = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert bindings == {"ss-statestore-operator", "ss-statestore-operator-discovery"}
    for binding in by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ss-statestore-operator", "namespace": "statestore-system"}
        ]


@pytest.mark.helm
def test_rbac_watch_namespaces_mode(home: Path) -> None:
    docs = render(home, VALUE_SETS["watch-namespaces"])
    role_bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    for binding in role_bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "ss-statestore-operator",
        }
    # The only cluster-wide binding is the discovery role: no Secrets, no Components, no writes.
    (cluster_binding,) = by_kind(docs, "ClusterRoleBinding")
    discovery = one(docs, "ClusterRole", cluster_binding["roleRef"]["name"])
    for rule in discovery["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}


@pytest.mark.helm
def test_rbac_off(home: Path) -> None:
    docs = render(home, VALUE_SETS["existing-serviceaccount"])
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)


# --- webhook ----------------------------------------------------------------------------------------


def webhook_of(docs: list[Manifest]) -> dict[str, Any]:
    (config,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    result: dict[str, Any] = hook
    return result


def test_webhook_path_is_the_operators_handler() -> None:
    """The Service path is kopf's route to the @kopf.on.validate handler: `/<handler id>`."""
    import kopf

    from statestore_operator import handlers
    from statestore_operator import render as pod_render

    registry = kopf.OperatorRegistry()
    options = handlers.Options(pods=pod_render.PodSettings(image="x"), webhook_cert="c", webhook_key="k")
    handlers.register(registry, options)
    ids = [h.id for h in registry._webhooks.get_all_handlers()]
    assert ids == ["validate-component"]
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(r'define "statestore-operator.webhookPath" -}}\n/validate-component\n', text)


@pytest.mark.helm
def test_webhook_generated_certificate(home: Path) -> None:
    docs = render(home)
    secret = one(docs, "Secret", "ss-statestore-operator-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    hook = webhook_of(docs)
    client = hook["clientConfig"]
    assert client["caBundle"] == secret["data"]["ca.crt"], "caBundle is the CA that signed the cert"
    assert client["service"] == {
        "name": "ss-statestore-operator-webhook",
        "namespace": "statestore-system",
        "port": 443,
        "path": "/validate-component",
    }
    import base64

    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "ss-statestore-operator-webhook.statestore-system.svc" in names
    public = ca.public_key()
    assert isinstance(public, rsa.RSAPublicKey), "Helm's genCA makes RSA keys"
    assert cert.signature_hash_algorithm is not None
    public.verify(
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
    )
    # The operator mounts that Secret and is told where the files are; the pod restarts on a new cert.
    container = operator_container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]
    assert "checksum/webhook-cert" in pod["metadata"]["annotations"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert arg(docs, "--webhook-cert") == mount["mountPath"] + "/tls.crt"
    assert arg(docs, "--webhook-key") == mount["mountPath"] + "/tls.key"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["webhook"] == int(arg(docs, "--webhook-port") or 0) == 9443
    service = one(docs, "Service", "ss-statestore-operator-webhook")
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    # Empty: the operator serves the webhook but leaves the configuration to the chart.
    assert arg(docs, "--webhook-config-name") == ""


@pytest.mark.helm
def test_webhook_rules(home: Path) -> None:
    hook = webhook_of(render(home))
    assert hook["rules"] == [
        {
            "apiGroups": ["dapr.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["components"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert "namespaceSelector" not in hook
    assert "startsWith('state.')" in hook["matchConditions"][0]["expression"]


@pytest.mark.helm
def test_webhook_watch_namespaces_only(home: Path) -> None:
    hook = webhook_of(render(home, VALUE_SETS["watch-namespaces"]))
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
        ]
    }


@pytest.mark.helm
def test_webhook_cert_manager(home: Path) -> None:
    docs = render(home, VALUE_SETS["webhook-cert-manager"])
    assert not by_kind(docs, "Secret"), "cert-manager writes the Secret"
    certificate = one(docs, "Certificate")
    issuer = one(docs, "Issuer")
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert certificate["spec"]["secretName"] == "ss-statestore-operator-webhook-tls"
    assert "ss-statestore-operator-webhook.statestore-system.svc" in certificate["spec"]["dnsNames"]
    config = one(docs, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "statestore-system/" + certificate["metadata"]["name"]
    )
    assert "caBundle" not in webhook_of(docs)["clientConfig"]
    pod = one(docs, "Deployment")["spec"]["template"]
    assert "checksum/webhook-cert" not in (pod["metadata"].get("annotations") or {})

    docs = render(home, VALUE_SETS["webhook-cert-manager-issuer"])
    assert not by_kind(docs, "Issuer")
    assert one(docs, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "my-ca"}


@pytest.mark.helm
def test_webhook_off(home: Path) -> None:
    docs = render(home, VALUE_SETS["webhook-off"])
    assert not by_kind(docs, "ValidatingWebhookConfiguration")
    assert not by_kind(docs, "Secret")
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-webhook")]
    container = operator_container(docs)
    assert not any(a.startswith("--webhook") for a in container["args"])
    assert "readinessProbe" not in container


# --- metrics ----------------------------------------------------------------------------------------


@pytest.mark.helm
def test_metrics_service_and_servicemonitor(home: Path) -> None:
    docs = render(home, VALUE_SETS["metrics-servicemonitor"])
    service = one(docs, "Service", "ss-statestore-operator-metrics")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert ports["metrics"] == 9090 == int(arg(docs, "--metrics-port") or 0)
    assert not by_kind(render(home), "ServiceMonitor"), "off by default"
    docs = render(home, VALUE_SETS["metrics-off"])
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
