"""Prometheus metrics of the state API: requests and latency per operation and status.

Installed as ASGI middleware only when metrics are enabled, so a server without them pays nothing.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "statestore_http_requests_total",
    "State API requests by operation and status code",
    ["operation", "status"],
)
LATENCY = Histogram(
    "statestore_http_request_duration_seconds",
    "State API request latency by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def operation(method: str, path: str) -> str:
    """The state operation a request is, from its method and path shape."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[2] == "state":
        if parts[1] == "v1.0-alpha1":
            return "query"
        if len(parts) == 4:
            return "save"
        if len(parts) == 5:
            if method == "GET":
                return "get"
            if method == "DELETE":
                return "delete"
            return parts[4] if parts[4] in ("bulk", "transaction") else "other"
    return "other"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # `labels()` takes a lock and validates the label values on every call; resolve each
        # combination once (there are a few dozen at most: operations times status codes).
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}
        # Requests served inside the HTTP protocol (hot_http) are observed here too.
        self.hot_routes = getattr(app, "hot_routes", None)
        if self.hot_routes is not None:
            self.hot_routes.observe = self._observe

    def _observe(self, op: str, status: int, seconds: float) -> None:
        counter = self._counters.get((op, status))
        if counter is None:
            counter = self._counters[op, status] = REQUESTS.labels(op, str(status))
        histogram = self._histograms.get(op)
        if histogram is None:
            histogram = self._histograms[op] = LATENCY.labels(op)
        counter.inc()
        histogram.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self._observe(operation(scope["method"], scope["path"]), status, time.perf_counter() - started)
