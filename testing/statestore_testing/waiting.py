"""Polling until something observable happens, with a generous deadline and a message naming it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What was waited for did not happen in time (an AssertionError, so a test reports it as a failure)."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Call probe() until it returns something truthy, and return that; raise WaitTimeout naming
    `what` after `timeout` seconds. The probe runs once more after the deadline, so a slow machine
    that reaches the state just in time still passes."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        if result := probe():
            return result
        if expired:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(
    what: str, probe: Callable[[], Awaitable[T | None]], seconds: float = 60.0, interval: float = 0.1
) -> T:
    """`wait_for` inside an event loop, for a probe that is a coroutine (the loop keeps running)."""
    deadline = time.monotonic() + seconds
    while True:
        expired = time.monotonic() > deadline
        if result := await probe():
            return result
        if expired:
            raise WaitTimeout(f"timed out after {seconds:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
