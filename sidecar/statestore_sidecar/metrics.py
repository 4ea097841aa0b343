"""Prometheus metrics of the state API, named after daprd's component metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter(
    "statestore_http_requests_total", "State API requests by route and status", ["route", "status"]
)
LATENCY = Histogram(
    "statestore_http_request_duration_seconds",
    "State API request latency by route",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def start_metrics_server(port: int, address: str) -> None:
    start_http_server(port, addr=address)
