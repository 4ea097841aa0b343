"""A work queue of Component keys, as controller-runtime has: triggers add keys, a few workers reconcile.

Every trigger (a Component event, an event of its Deployment, the resync, a retry) only adds the
Component's key. A key waiting in the queue is not added twice, and a key added while it is being
reconciled is reconciled once more afterwards, so a burst of events for one Component costs one or
two reconciliations, each of which reads the newest state. A fixed number of workers bounds how many
reconciliations press on the API server at once, so under load each finishes quickly instead of all
of them crawling together.

A key is queued for a *full* reconciliation (every child checked) unless every trigger since it was
queued asked only for a status refresh (its Deployment changed); a full request always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import metrics

log = logging.getLogger("statestore.operator")

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self, handle: Callable[[Key, bool], Awaitable[None]], workers: int) -> None:
        self._handle = handle
        self._workers = workers
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: dict[Key, bool] = {}  # key -> full
        self._active: set[Key] = set()
        self._dirty: dict[Key, bool] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile worker {i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def add(self, key: Key, full: bool = True) -> None:
        if key in self._waiting:
            self._waiting[key] = self._waiting[key] or full
            return
        if key in self._active:
            # Reconciled again once the running pass is done.
            self._dirty[key] = self._dirty.get(key, False) or full
            return
        self._waiting[key] = full
        self._queue.put_nowait(key)
        metrics.QUEUE_DEPTH.set(len(self._waiting))

    def add_after(self, key: Key, delay: float) -> None:
        def fire() -> None:
            self._timers.discard(timer)
            self.add(key)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def __len__(self) -> int:
        return len(self._waiting) + len(self._active)

    async def drained(self) -> None:
        """Return once nothing is queued or running."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            full = self._waiting.pop(key, True)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._active.add(key)
            try:
                await self._handle(key, full)
            except Exception:  # the handler reports and retries its own failures; never lose a worker
                log.exception("reconciling %s/%s failed", *key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self.add(key, self._dirty.pop(key))
                self._queue.task_done()  # after the re-add, so drained() sees it
