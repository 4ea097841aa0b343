"""Graceful drain: on SIGTERM, fail readiness at once, keep serving for a grace period, then stop.

Kubernetes removes a terminating pod from its Service's endpoints at the same time as it sends SIGTERM,
but clients, proxies and kube-proxy learn of it a little later, so requests keep arriving for a few
seconds. The server therefore keeps accepting and answering them for `--drain-seconds` while its
readiness check fails, and only then stops its listeners, letting in-flight requests finish.

This holds no transport: readiness answers from `Drain.draining`; once `Drain.expired()` the server
calls `Drain.close()` as it closes its HTTP listener, and every other listener (gRPC) closes on that
same call, giving its calls in flight `FINISH_SECONDS`, as the HTTP server gives its requests. The
signal handler calls `Drain.begin()`; a second signal stops at once (`Drain.hurry()`).
"""

from __future__ import annotations

import asyncio
import time

# After the listeners close, the requests and calls in flight get this long to finish (a pod's
# grace period leaves room for it and for the stores to close).
FINISH_SECONDS = 20.0


class Drain:
    """The shutdown state shared by the listeners of one server process."""

    def __init__(self, grace_seconds: float = 0.0) -> None:
        if grace_seconds < 0:
            raise ValueError("the drain period cannot be negative")
        self.grace_seconds = grace_seconds
        self._began: float | None = None
        self._hurried = False
        self._closed = asyncio.Event()

    @property
    def draining(self) -> bool:
        """True from the first stop signal on: readiness fails, requests are still served."""
        return self._began is not None

    def begin(self) -> None:
        """Start draining (idempotent: a repeated call is `hurry()`)."""
        if self._began is not None:
            self.hurry()
            return
        self._began = time.monotonic()

    def hurry(self) -> None:
        """Stop now (a second signal), without waiting for the rest of the grace period."""
        if self._began is None:
            self._began = time.monotonic()
        self._hurried = True

    def expired(self) -> bool:
        """True once the listeners should stop accepting: after the grace period, or when hurried."""
        if self._began is None:
            return False
        return self._hurried or time.monotonic() - self._began >= self.grace_seconds

    def remaining(self) -> float:
        if self._began is None:
            return self.grace_seconds
        return 0.0 if self._hurried else max(0.0, self._began + self.grace_seconds - time.monotonic())

    def close(self) -> None:
        """The server is stopping (drained or not): every listener closes now (idempotent)."""
        self._closed.set()

    async def closed(self) -> None:
        """Return once `close()` has been called."""
        await self._closed.wait()
