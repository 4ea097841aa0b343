"""API tokens and scopes against a real API server: the Secrets and NetworkPolicies a user sees.

There is no CNI in the test control plane, so nothing enforces a NetworkPolicy here: these tests show
the objects the operator writes (what a CNI would enforce), not packets being dropped.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from operator_testing import (
    Kube,
    Operator,
    container_env,
    no_change,
    reconciled,
    reconciles,
    rendered_pod,
    rendered_server,
    run_documented,
    settled,
    wait_for,
)

from fixtures.docs import documented

pytestmark = pytest.mark.k8s

GENERATE = {"statestore.dapr.io/api-token": "generate"}


def component(name: str, annotations: dict[str, str] | None = None, scopes: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    if scopes is not None:
        doc["scopes"] = scopes
    return doc


def token_env(kube: Kube, name: str) -> dict[str, Any] | None:
    deploy = kube.must_get("deployment", f"statestore-{name}")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    for item in container["env"]:
        if item["name"] == "DAPR_API_TOKEN":
            result: dict[str, Any] = item["valueFrom"]
            return result
    return None


def deployed(kube: Kube, name: str) -> None:
    """Wait until the Component's Deployment is there (its pods may or may not be ready yet)."""
    wait_for(
        f"{name} to be deployed",
        lambda: (kube.conditions(name).get("Available") or {}).get("reason") in ("Progressing", "Available"),
        timeout=30,
    )


def template_hash(kube: Kube, name: str) -> str:
    deploy = kube.must_get("deployment", f"statestore-{name}")
    return str(deploy["spec"]["template"]["metadata"]["annotations"]["statestore.dapr.io/config-hash"])


# --- the API token ---------------------------------------------------------------------------------------


def test_generated_token_is_made_once_owned_and_collected(kube: Kube, operator: Operator) -> None:
    kube.apply(component("orders", GENERATE))
    kube.wait_condition("orders", "Validated", "True", "Valid")
    body = kube.must_get("components.dapr.io", "orders")
    secret = kube.must_get("secret", "statestore-orders-api-token")
    assert secret["type"] == "Opaque"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["uid"] == body["metadata"]["uid"] and owner["controller"] is True
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), "32 random bytes, URL-safe base64"
    assert token_env(kube, "orders") == {
        "secretKeyRef": {"name": "statestore-orders-api-token", "key": "token"}
    }
    # The value is in the Secret only: not in the ConfigMap, the Deployment or the operator's log.
    assert token not in str(kube.must_get("configmap", "statestore-orders"))
    assert token not in str(kube.must_get("deployment", "statestore-orders"))
    assert token not in operator.output()

    # Re-reconciling (resync rounds every 3 s, a no-op re-apply, a restart) never changes it.
    objects = [("secret", "statestore-orders-api-token")]
    settled(kube, *objects)
    generation = kube.must_get("deployment", "statestore-orders")["metadata"]["generation"]
    with no_change(kube, *objects):
        kube.apply(component("orders", GENERATE))
        operator.stop()
        operator.start()
        reconciled(operator, 3, since=0)  # the new process: its first look and resync rounds
    assert kube.must_get("secret", "statestore-orders-api-token")["data"] == secret["data"]
    # Nor the pods: the Deployment's spec is untouched (its status is the controller-manager's).
    assert kube.must_get("deployment", "statestore-orders")["metadata"]["generation"] == generation

    # Deleting the Component deletes its Secret (garbage collection through the ownerReference).
    kube.cluster.kubectl("delete", "components.dapr.io", "orders", "-n", kube.ns, "--wait=true")
    wait_for(
        "the token Secret to be collected", lambda: kube.get("secret", "statestore-orders-api-token") is None
    )


def test_deleting_the_generated_secret_rotates_the_token_and_rolls_the_pods(
    kube: Kube, operator: Operator
) -> None:
    kube.apply(component("orders", GENERATE))
    kube.wait_condition("orders", "Validated", "True")
    first = kube.must_get("secret", "statestore-orders-api-token")
    before = template_hash(kube, "orders")
    kube.cluster.kubectl("delete", "secret", "statestore-orders-api-token", "-n", kube.ns)
    second = wait_for(
        "a new token Secret",
        lambda: (
            s
            if (s := kube.get("secret", "statestore-orders-api-token"))
            and s["metadata"]["uid"] != first["metadata"]["uid"]
            else None
        ),
    )
    assert second["data"]["token"] != first["data"]["token"]
    wait_for("the pods to roll", lambda: template_hash(kube, "orders") != before)


def test_a_foreign_secret_is_never_overwritten(kube: Kube, operator: Operator) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "statestore-orders-api-token"},
            "stringData": {"token": "someone-elses"},
        }
    )
    kube.apply(component("orders", GENERATE))
    cond = kube.wait_condition("orders", "Available", "False", "NameInUse")
    assert "Secret statestore-orders-api-token" in cond["message"]
    kube.wait_condition("orders", "Ready", "False", "NameInUse")
    secret = kube.must_get("secret", "statestore-orders-api-token")
    assert base64.b64decode(secret["data"]["token"]) == b"someone-elses"
    assert not secret["metadata"].get("ownerReferences")
    assert kube.get("deployment", "statestore-orders") is None
    # Once the name is free, the operator generates its own.
    kube.cluster.kubectl("delete", "secret", "statestore-orders-api-token", "-n", kube.ns)
    deployed(kube, "orders")
    mine = kube.must_get("secret", "statestore-orders-api-token")
    assert base64.b64decode(mine["data"]["token"]) != b"someone-elses"


def test_named_token_secret_and_switching_sources_rolls_the_pods(kube: Kube, operator: Operator) -> None:
    named = {"statestore.dapr.io/api-token-secret": "app-token/api"}
    kube.apply(component("orders", named))
    cond = kube.wait_condition("orders", "Validated", "False", "SecretNotFound")
    assert "'app-token'" in cond["message"] and "api-token-secret" in cond["message"]
    kube.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-token"}, "stringData": {"x": "1"}}
    )
    cond = kube.wait_condition("orders", "Validated", "False", "SecretKeyNotFound", timeout=20)
    assert "'api'" in cond["message"]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-token"},
            "stringData": {"api": "t0ken"},
        }
    )
    kube.wait_condition("orders", "Validated", "True", "Valid", timeout=20)
    assert token_env(kube, "orders") == {"secretKeyRef": {"name": "app-token", "key": "api"}}
    named_hash = template_hash(kube, "orders")
    assert kube.get("secret", "statestore-orders-api-token") is None, "nothing generated"
    # The user's Secret is never touched.
    assert not kube.must_get("secret", "app-token")["metadata"].get("ownerReferences")

    # Named -> generated -> none: each change of the token source rolls the pods.
    kube.apply(component("orders", GENERATE))
    wait_for("a generated token", lambda: kube.get("secret", "statestore-orders-api-token"))
    wait_for("the pods to roll onto it", lambda: template_hash(kube, "orders") != named_hash)
    assert token_env(kube, "orders") == {
        "secretKeyRef": {"name": "statestore-orders-api-token", "key": "token"}
    }
    generated_hash = template_hash(kube, "orders")
    kube.apply(component("orders"))
    wait_for("the pods to roll without a token", lambda: template_hash(kube, "orders") != generated_hash)
    assert token_env(kube, "orders") is None
    # The generated Secret lives as long as its Component (turning generation back on finds it again).
    kube.must_get("secret", "statestore-orders-api-token")


def test_bad_token_annotation_is_reported(kube: Kube, operator: Operator) -> None:
    kube.apply(component("orders", {"statestore.dapr.io/api-token": "yes-please"}))
    cond = kube.wait_condition("orders", "Validated", "False", "InvalidSpec")
    assert "'yes-please'" in cond["message"]
    assert kube.get("deployment", "statestore-orders") is None


# --- the documented commands: a client gets the token and uses it ---------------------------------------


def test_documented_sdk_setup(kube: Kube, operator: Operator, tmp_path: Path) -> None:
    """docs/operator.md's app env and code: the Python SDK over gRPC, with the generated token."""
    kube.apply(documented("operator.md", "api-token-component"))
    kube.wait_condition("orders", "Validated", "True")
    env_doc = yaml.safe_load(documented("operator.md", "sdk-app-env"))["env"]
    code = documented("operator.md", "sdk-app-code")
    with rendered_server(kube, "orders", tmp_path) as server:
        # The Service's names stand for the rendered pod run as a local process.
        local = {
            "http://statestore-orders:3500": server.url,
            "statestore-orders:50001": server.grpc_address,
        }
        env = {item["name"]: local.get(item.get("value", ""), item.get("value", "")) for item in env_doc}
        env.update(container_env(kube, [i for i in env_doc if "valueFrom" in i]))
        assert set(env) == {"DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN"}
        assert env["DAPR_API_TOKEN"] and env["DAPR_GRPC_ENDPOINT"] == server.grpc_address
        app = tmp_path / "app.py"
        app.write_text(code)
        run = subprocess.run(
            [sys.executable, str(app)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip().splitlines()[-1] == "hello"
        without_token = {**os.environ, **env, "DAPR_API_TOKEN": "wrong"}
        refused = subprocess.run(
            [sys.executable, str(app)], env=without_token, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr


@pytest.mark.parametrize("doc", ["security.md", "operator.md"])
def test_documented_token_commands(kube: Kube, operator: Operator, tmp_path: Path, doc: str) -> None:
    kube.apply(documented(doc, "api-token-component"))
    kube.wait_condition("orders", "Validated", "True")
    script = documented(doc, "api-token-client")
    # The Service the client calls in the cluster is, here, the rendered pod run as a local process.
    assert "http://statestore-orders:3500" in script
    with rendered_pod(kube, "orders", tmp_path) as url:
        assert httpx.get(f"{url}/v1.0/state/orders/greeting").status_code == 401
        out = run_documented(kube, tmp_path, script.replace("http://statestore-orders:3500", url))
        assert out.strip().splitlines()[-1] == '"hello"'
        assert httpx.get(f"{url}/v1.0/healthz").status_code == 204  # probes need no token


# --- scopes: the NetworkPolicy ---------------------------------------------------------------------------


def policy_apps(kube: Kube, name: str) -> list[str] | None:
    policy = kube.get("networkpolicy", f"statestore-{name}")
    if policy is None:
        return None
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (expression,) = peer["podSelector"]["matchExpressions"]
    assert expression["key"] == "dapr.io/app-id" and expression["operator"] == "In"
    values: list[str] = expression["values"]
    return values


def test_scopes_become_a_network_policy(kube: Kube, operator: Operator) -> None:
    kube.apply(component("orders", scopes=["checkout", "billing"]))
    kube.wait_condition("orders", "Validated", "True")
    policy = kube.must_get("networkpolicy", "statestore-orders")
    body = kube.must_get("components.dapr.io", "orders")
    (owner,) = policy["metadata"]["ownerReferences"]
    assert owner["uid"] == body["metadata"]["uid"] and owner["controller"] is True
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    # It selects exactly the state API pods of this Component.
    deploy = kube.must_get("deployment", "statestore-orders")
    assert spec["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3500}, {"protocol": "TCP", "port": 50001}]
    assert "namespaceSelector" not in rule["from"][0], "same namespace only"
    assert policy_apps(kube, "orders") == ["billing", "checkout"]

    # Scopes change: the policy follows; nothing changes while they stay.
    settled(kube, ("networkpolicy", "statestore-orders"))
    with no_change(kube, ("networkpolicy", "statestore-orders")):
        reconciled(operator, 2, since=reconciles(operator))
    kube.apply(component("orders", scopes=["checkout"]))
    wait_for("the policy to follow the scopes", lambda: policy_apps(kube, "orders") == ["checkout"])
    # Scopes removed: the policy goes.
    kube.apply(component("orders"))
    wait_for("the policy to be deleted", lambda: kube.get("networkpolicy", "statestore-orders") is None)
    # ... and comes back with them.
    kube.apply(component("orders", scopes=["checkout"]))
    wait_for("the policy again", lambda: policy_apps(kube, "orders") == ["checkout"])
    # Deleting the Component collects it.
    kube.cluster.kubectl("delete", "components.dapr.io", "orders", "-n", kube.ns, "--wait=true")
    wait_for("the policy to be collected", lambda: kube.get("networkpolicy", "statestore-orders") is None)


def test_app_id_label_flag(kube: Kube, start_operator: Any) -> None:
    start_operator("--app-id-label", "example.com/app")
    kube.apply(component("orders", scopes=["checkout"]))
    kube.wait_condition("orders", "Validated", "True")
    policy = kube.must_get("networkpolicy", "statestore-orders")
    expression = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    assert expression == {"key": "example.com/app", "operator": "In", "values": ["checkout"]}


def test_unusable_scope_is_reported(kube: Kube, operator: Operator) -> None:
    kube.apply(component("orders", scopes=["checkout", "not an app id"]))
    cond = kube.wait_condition("orders", "Validated", "False", "InvalidSpec")
    assert "scopes[1]" in cond["message"]
    assert kube.get("networkpolicy", "statestore-orders") is None
    assert kube.get("deployment", "statestore-orders") is None


def test_foreign_network_policy_is_never_taken_over(kube: Kube, operator: Operator) -> None:
    kube.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "statestore-orders"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    kube.apply(component("orders", scopes=["checkout"]))
    cond = kube.wait_condition("orders", "Available", "False", "NameInUse")
    assert "NetworkPolicy statestore-orders" in cond["message"]
    assert kube.must_get("networkpolicy", "statestore-orders")["spec"]["podSelector"] == {}
    # And an unscoped Component leaves a foreign policy of that name alone too.
    kube.apply(component("orders"))
    deployed(kube, "orders")
    reconciled(operator, 2, since=reconciles(operator))
    assert kube.get("networkpolicy", "statestore-orders") is not None
