"""Settings the server would refuse are refused at `kubectl apply` (webhook) or reported (without it).

The same values `tests/cli/test_config_refusals.py` walks, through the real control plane: values
only the stores' own parsers catch (a host list, a DSN, an SQLite pragma) and a misspelt name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_testing import Kube, Operator, start_with_webhook, wait_for

from fixtures.sidecar import component_doc

pytestmark = pytest.mark.k8s


# (Component, the field the message names, more of the message)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    (
        component_doc("redis-port", "state.redis", redisHost="localhost:notaport"),
        "'redisHost'",
        "invalid port",
    ),
    (
        component_doc("mysql-dsn", "state.mysql", connectionString="host=db user=u"),
        "'connectionString'",
        "DSN",
    ),
    (
        component_doc("sqlite-pragma", "state.sqlite", connectionString="file:state.db?_pragma=fast"),
        "'connectionString'",
        "_pragma",
    ),
    (
        component_doc("pg-typo", "state.postgresql", conectionString="host=db user=u password=p"),
        "'connectionString'",
        "'conectionString' is not a setting of state.postgresql: did you mean 'connectionString'?",
    ),
]


def warnings_of(kube: Kube, name: str, reason: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [e for e in kube.events(name) if e["reason"] == reason]


def test_refused_settings_are_reported_with_an_event(kube: Kube, operator: Operator) -> None:
    for manifest, _, _ in REFUSED:
        kube.apply(manifest)
    for manifest, field, detail in REFUSED:
        name = manifest["metadata"]["name"]
        cond = kube.wait_condition(name, "Validated", "False", "InvalidMetadata")
        assert field in cond["message"] and detail in cond["message"], cond
        events = wait_for("a Warning event", warnings_of(kube, name, "InvalidMetadata"))
        assert events[0]["type"] == "Warning" and field in events[0]["message"]
        assert kube.get("deployment", f"statestore-{name}") is None


def test_the_webhook_refuses_them_at_apply(
    kube: Kube, start_operator: Callable[..., Operator], tmp_path: Path
) -> None:
    _, config = start_with_webhook(kube, start_operator, tmp_path)
    try:
        wait_for(
            "the webhook configuration",
            lambda: (
                kube.cluster.kubectl("get", "validatingwebhookconfiguration", config, check=False).returncode
                == 0
            ),
        )
        for manifest, field, detail in REFUSED:
            refused = kube.cluster.kubectl(
                "apply", "-n", kube.ns, "-f", "-", input=json.dumps(manifest), check=False
            )
            assert refused.returncode != 0, manifest
            assert field in refused.stderr and detail in refused.stderr, refused.stderr
            assert kube.get("components.dapr.io", manifest["metadata"]["name"]) is None
        # A misspelt optional name is let through (Dapr ignores unknown names), with a warning.
        warned = kube.apply(
            component_doc("typo", "state.sqlite", connectionString=":memory:", tabelName="orders")
        )
        assert "'tabelName'" in warned.stderr and "did you mean 'tableName'?" in warned.stderr
    finally:
        kube.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", config, "--ignore-not-found", check=False
        )
