"""Stopping background tasks so that a stop always returns."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# How long a stop waits before cancelling again.
_RETRY = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended, cancelling again while it runs on.

    One cancellation is not always enough on Python 3.11: `asyncio.wait_for` (used by drivers)
    returns its inner result instead of raising when the cancellation lands as that result
    arrives (CPython gh-86296), and a `while True` loop then goes on as if never cancelled. The
    task's own failure, if any, is the caller's no longer: it is retrieved and dropped.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RETRY)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
