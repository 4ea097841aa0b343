"""Prometheus metrics of the operator, named like controller-runtime's (`*_reconcile_total`, ...)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_TOTAL = Counter(
    "statestore_operator_reconcile_total",
    "Reconciliations of Components, by result (success or error).",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "statestore_operator_reconcile_errors_total",
    "Reconciliations that failed with an error (they are retried).",
    ["controller"],
)
RECONCILE_TIME = Histogram(
    "statestore_operator_reconcile_time_seconds",
    "Time spent per reconciliation.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OBJECT_WRITES = Counter(
    "statestore_operator_object_writes_total",
    "Objects the operator created or changed, by kind (no-op reconciliations write nothing).",
    ["kind"],
)
QUEUE_DEPTH = Gauge(
    "statestore_operator_workqueue_depth",
    "Components waiting for a reconciliation.",
)
API_REQUESTS = Counter(
    "statestore_operator_api_requests_total",
    "Requests of the operator's own client to the API server, by method (kopf's watches not counted).",
    ["method"],
)
