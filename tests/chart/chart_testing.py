"""Helpers of the chart tests: the Helm binary from hack/k8s/build.sh, rendering, and the value sets."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.k8s import ControlPlane
from statestore_testing.control_plane import default_bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "statestore-operator"
ROOT_CRD = ROOT / "crds" / "components.dapr.io.yaml"
CHART_CRD = CHART / "crds" / "components.dapr.io.yaml"
EXAMPLES = ROOT / "examples"
# Minimal CRDs of what the optional objects need but the test cluster does not have (cert-manager's
# Issuer and Certificate, the Prometheus Operator's ServiceMonitor): enough for the API server to
# accept the objects in a server-side dry run, without their real schemas.
THIRD_PARTY_CRDS = Path(__file__).resolve().parent / "crds"

Manifest = dict[str, Any]

# Every documented combination of options (docs/install.md); each must lint, render, and be accepted
# by a real API server. Keys are the test ids.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "webhook-off": {"webhook": {"enabled": False}},
    "webhook-cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "webhook-cert-manager-issuer": {
        "webhook": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "my-ca"}}}
    },
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "sidecar-injection": {"sidecarInjection": {"enabled": True}, "watchNamespaces": ["team-a"]},
    "metrics-servicemonitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "existing-serviceaccount": {
        "serviceAccount": {"create": False, "name": "my-operator"},
        "rbac": {"create": False},
    },
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                            ]
                        }
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "ops"},
        "podLabels": {"example.com/tier": "control"},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "extraArgs": ["--verbose"],
    },
}


def helm_binary() -> Path:
    """helm from `bash hack/k8s/build.sh` (next to kube-apiserver); fail (never skip) when it is missing."""
    helm = default_bin_dir() / "helm"
    if not os.access(helm, os.X_OK):
        pytest.fail(f"{helm} is missing: run `bash hack/k8s/build.sh` first", pytrace=False)
    return helm


def helm_env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """Helm's config, cache and data under `home`, and no ambient kube context."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    env.update(
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_DATA_HOME=str(home / "data"),
    )
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def helm(
    *args: str, home: Path, kubeconfig: Path | None = None, check: bool = True, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        env=helm_env(home, kubeconfig),
        cwd=cwd,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def values_args(values: Mapping[str, Any], directory: Path, name: str = "values") -> list[str]:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["--values", str(path)]


def template(
    values: Mapping[str, Any],
    *,
    home: Path,
    release: str = "ss",
    namespace: str = "statestore-system",
    extra: Sequence[str] = (),
) -> list[Manifest]:
    """`helm template` of the chart, parsed (CRDs from crds/ are not included)."""
    out = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *values_args(values, home),
        *extra,
        home=home,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Sequence[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_container(docs: Sequence[Manifest]) -> Manifest:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Manifest = container
    return result


def example_components() -> Iterator[Manifest]:
    """The state store Components in examples/ (what `kubectl apply -f examples/` creates)."""
    for path in sorted(EXAMPLES.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                isinstance(doc, dict)
                and doc.get("kind") == "Component"
                and str((doc.get("spec") or {}).get("type", "")).lower().startswith("state.")
            ):
                yield doc


def install_third_party_crds(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(THIRD_PARTY_CRDS))
    for path in sorted(THIRD_PARTY_CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


# How a refused API request shows in the operator's log: the operator's own `HTTP 403: ...`, a
# Kubernetes Status (`"code": 403`, `... is forbidden: User ...`, reason `Forbidden`) and kopf's
# "Not enough permissions". Never a bare "403": log timestamps carry milliseconds (`11:16:48,403`).
_FORBIDDEN = re.compile(
    r"HTTP 403\b|[\"']code[\"']:\s*403\b|\b403,? (?:message=)?'?Forbidden|\bForbidden\b|is forbidden:"
    r"|Not enough permissions"
)


def forbidden_lines(log: str) -> list[str]:
    """The lines of an operator log that report a request refused for lack of permissions."""
    return [line for line in log.splitlines() if _FORBIDDEN.search(line)]
