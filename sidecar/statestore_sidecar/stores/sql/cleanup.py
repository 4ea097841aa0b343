"""Deleting expired rows in the background, the same way in every SQL store.

Reads never return an expired row, so this only reclaims space. Every replica runs the loop; the
store's `sweep` claims the turn in its metadata table, so one replica at a time deletes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ...tasks import cancel_and_wait
from ..base import StoreError

log = logging.getLogger("statestore.cleanup")


def claim_window(interval: float) -> float:
    """Seconds since another replica's cleanup within which this one skips its turn.

    A little under the interval (a tenth of it, at most a second), so a timer that fires early
    still finds the turn free.
    """
    return max(interval - min(interval * 0.1, 1.0), 0.0)


class Cleaner:
    """Calls `sweep()` every `interval` seconds (0: never) until stopped; failures are logged.

    `sweep` is the store's `cleanup_expired`, which skips its turn within `claim_window(interval)`
    of any replica's last cleanup.
    """

    def __init__(self, name: str, interval: float, sweep: Callable[[], Awaitable[int]]) -> None:
        self._name = name
        self._interval = interval
        self._sweep = sweep
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True  # the loop ends at its next turn even if the cancellation is lost
        if task is not None:
            await cancel_and_wait(task)

    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            if self._stopping:
                return
            try:
                deleted = await self._sweep()
            except StoreError as exc:
                log.warning("state store %s: removing expired rows failed: %s", self._name, exc)
            else:
                if deleted:
                    log.debug("state store %s: removed %d expired rows", self._name, deleted)
