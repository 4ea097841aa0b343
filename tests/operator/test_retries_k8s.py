"""A reconciliation that fails is retried on the documented schedule (5 s, then doubling up to 5 min,
docs/operator.md), and the reconcile metrics count what happened (docs/operator.md, "Metrics").

The failure is a real one: a ResourceQuota that allows no more ConfigMaps in the namespace, so the
API server refuses the operator's write until the quota is lifted.
"""

from __future__ import annotations

import re

import pytest
from operator_testing import Kube, Operator, wait_for

pytestmark = pytest.mark.k8s

FIRST_RETRY, MAX_RETRY = 5.0, 300.0  # docs/operator.md


def component(name: str) -> dict[str, object]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }


def retry_delays(operator: Operator, namespace: str, name: str) -> list[float]:
    """The delays the operator announced, in order, for the retries of one Component."""
    pattern = re.compile(
        rf"reconciling {re.escape(namespace)}/{re.escape(name)} failed \(retrying in ([0-9.]+)s\)"
    )
    return [float(m.group(1)) for m in pattern.finditer(operator.output())]


def metrics(operator: Operator) -> dict[str, float]:
    """`name{labels}` -> value, for the operator's own series."""
    found = {}
    for line in operator.metrics().splitlines():
        if line.startswith("statestore_operator_"):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def test_failed_reconciliations_back_off_and_are_counted(kube: Kube, operator: Operator) -> None:
    wait_for("the namespace's root CA ConfigMap", lambda: kube.get("configmap", "kube-root-ca.crt"))
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-more-configmaps"},
        "spec": {"hard": {"configmaps": "1"}},  # the root CA ConfigMap uses it up
    }
    kube.apply(quota)
    wait_for(
        "the quota to be counted",
        lambda: (kube.get("resourcequota", "no-more-configmaps") or {}).get("status", {}).get("used"),
    )
    kube.apply(component("mem"))

    # Failures follow one another (events, resync rounds every 3 s here, retries); each announces
    # the next retry's delay: 5 s, doubling each time, never more than 5 min.
    delays = wait_for(
        "eight failed reconciliations",
        lambda: d if len(d := retry_delays(operator, kube.ns, "mem")) >= 8 else None,
        timeout=180,
    )
    expected = [min(FIRST_RETRY * 2**n, MAX_RETRY) for n in range(len(delays))]
    assert delays == expected, operator.output()[-3000:]
    print(f"announced retry delays: {delays}")
    errors = consistent(operator)[ERRORS]
    assert errors >= len(delays)
    assert kube.get("configmap", "statestore-mem") is None

    # The quota goes: the next attempt succeeds, and the counters say so.
    kube.cluster.kubectl("delete", "resourcequota", "no-more-configmaps", "-n", kube.ns)
    kube.wait_condition("mem", "Validated", "True", timeout=120)
    kube.must_get("configmap", "statestore-mem")
    after = consistent(operator)
    assert after[SUCCESSES] >= 1 and after[ERRORS] >= errors
    assert after['statestore_operator_object_writes_total{kind="ConfigMap"}'] >= 1
    assert after['statestore_operator_object_writes_total{kind="Deployment"}'] >= 1


SUCCESSES = 'statestore_operator_reconcile_total{controller="component",result="success"}'
ERRORS = 'statestore_operator_reconcile_total{controller="component",result="error"}'


def consistent(operator: Operator) -> dict[str, float]:
    """A scrape in which the counters agree: every failed reconciliation is also counted in
    `reconcile_errors_total`, and every reconciliation is timed once. (The scrape runs in another
    thread, so one taken between two increments is scraped again; a real mismatch times out.)"""

    def agreeing() -> dict[str, float] | None:
        found = metrics(operator)
        errors, successes = found.get(ERRORS, 0.0), found.get(SUCCESSES, 0.0)
        timed = found.get('statestore_operator_reconcile_time_seconds_count{controller="component"}')
        counted = found.get('statestore_operator_reconcile_errors_total{controller="component"}', 0.0)
        return found if counted == errors and timed == errors + successes else None

    return wait_for("the reconcile counters to agree", agreeing, timeout=30)
