"""The chart's sidecar mode (sidecarInjection.*): the Pod webhook's configuration and the operator's flags."""

from __future__ import annotations

import re
from pathlib import Path

import kopf
import pytest
from chart_testing import CHART, by_kind, helm, one, operator_container, template, values_args

from statestore_operator import handlers, render


def test_inject_path_is_the_operators_handler() -> None:
    registry = kopf.OperatorRegistry()
    options = handlers.Options(
        pods=render.PodSettings(image="x"), webhook_cert="c", webhook_key="k", inject_sidecars=True
    )
    handlers.register(registry, options)
    ids = [h.id for h in registry._webhooks.get_all_handlers()]
    assert sorted(ids) == ["inject-sidecar", "validate-component"]
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(r'define "statestore-operator.injectPath" -}}\n/inject-sidecar\n', text)


@pytest.mark.helm
def test_off_by_default(tmp_path: Path) -> None:
    docs = template({}, home=tmp_path)
    assert not by_kind(docs, "MutatingWebhookConfiguration")
    assert "--inject-sidecars" not in operator_container(docs)["args"]
    assert not [r for d in by_kind(docs, "ClusterRole") for r in d["rules"] if "pods" in r["resources"]]


@pytest.mark.helm
def test_pod_webhook(tmp_path: Path) -> None:
    docs = template({"sidecarInjection": {"enabled": True}, "watchNamespaces": ["apps"]}, home=tmp_path)
    args = operator_container(docs)["args"]
    assert "--inject-sidecars" in args and "--inject-failure-policy=Ignore" in args
    assert "--inject-sidecar-kind=auto" in args  # native sidecars chosen by the API server's version
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == "/inject-sidecar"
    assert hook["clientConfig"]["caBundle"]
    assert hook["rules"][0]["resources"] == ["pods"] and hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "NoneOnDryRun"
    excluded, watched = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["operator"] == "NotIn"
    assert {"statestore-system", "kube-system", "kube-public", "kube-node-lease"} <= set(excluded["values"])
    assert watched == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps"]}
    assert "statestore.dapr.io/inject" in hook["matchConditions"][0]["expression"]
    lists = [
        r
        for d in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
        for r in d.get("rules") or []
        if "configmaps" in r["resources"] and "list" in r["verbs"]
    ]
    assert lists and all(r["verbs"] == ["list"] for r in lists)
    # Injected pods are watched (by label) to own their ConfigMaps: no get, no write.
    pods = [r for d in by_kind(docs, "ClusterRole") for r in d["rules"] if "pods" in r["resources"]]
    assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in pods] == [
        ([""], ["pods"], ["list", "watch"])
    ]


@pytest.mark.helm
def test_sidecar_kind_can_be_forced(tmp_path: Path) -> None:
    values = {"sidecarInjection": {"enabled": True, "sidecarKind": "ordinary"}}
    assert "--inject-sidecar-kind=ordinary" in operator_container(template(values, home=tmp_path))["args"]
    bad = {"sidecarInjection": {"enabled": True, "sidecarKind": "sometimes"}}
    refused = helm("template", "ss", str(CHART), *values_args(bad, tmp_path), home=tmp_path, check=False)
    assert refused.returncode != 0 and "sidecarKind" in refused.stderr, refused.stderr
