"""A work queue of Component keys, as controller-runtime has: triggers add keys, a few workers reconcile.

Every trigger (a Component event, an event of its Deployment, the resync, a retry) only adds the
Component's key. A key waiting in the queue is not added twice, and a key added while it is being
reconciled is reconciled once more afterwards, so a burst of events for one Component costs one or
two reconciliations, each of which reads the newest state. A fixed number of workers bounds how many
reconciliations press on the API server at once, so under load each finishes quickly instead of all
of them crawling together.

A key is queued for a *full* reconciliation (every child checked) unless every trigger since it was
queued asked only for a status refresh (its Deployment changed); a full request always wins.

The periodic resync adds its keys at *low* priority: workers take them only when no trigger is
waiting, and a trigger for a key waiting at low priority moves it up. Otherwise a resync of a few
thousand Components (longer than its period on a busy API server) would put each new Component
behind all of them, and the queue would never drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import metrics

log = logging.getLogger("statestore.operator")

Key = tuple[str, str]  # (namespace, name)

HIGH, LOW = 0, 1


@dataclass(slots=True)
class _Want:
    full: bool
    priority: int

    def merge(self, full: bool, priority: int) -> None:
        self.full = self.full or full
        self.priority = min(self.priority, priority)


class WorkQueue:
    def __init__(self, handle: Callable[[Key, bool], Awaitable[None]], workers: int) -> None:
        self._handle = handle
        self._workers = workers
        # Entries (priority, order, key); a key moved up leaves a stale entry behind, skipped when taken.
        self._queue: asyncio.PriorityQueue[tuple[int, int, Key]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._waiting: dict[Key, _Want] = {}
        self._active: set[Key] = set()
        self._dirty: dict[Key, _Want] = {}
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

    def add(self, key: Key, full: bool = True, priority: int = HIGH) -> None:
        waiting = self._waiting.get(key)
        if waiting is not None:
            moved_up = priority < waiting.priority
            waiting.merge(full, priority)
            if moved_up:
                self._queue.put_nowait((priority, next(self._order), key))
            return
        if key in self._active:
            # Reconciled again once the running pass is done.
            dirty = self._dirty.get(key)
            if dirty is None:
                self._dirty[key] = _Want(full, priority)
            else:
                dirty.merge(full, priority)
            return
        self._waiting[key] = _Want(full, priority)
        self._queue.put_nowait((priority, next(self._order), key))
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
            priority, _, key = await self._queue.get()
            want = self._waiting.get(key)
            if want is None or want.priority != priority:
                self._queue.task_done()  # stale: the key was moved up (and may be taken already)
                continue
            del self._waiting[key]
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._active.add(key)
            try:
                await self._handle(key, want.full)
            except Exception:  # the handler reports and retries its own failures; never lose a worker
                log.exception("reconciling %s/%s failed", *key)
            finally:
                self._active.discard(key)
                dirty = self._dirty.pop(key, None)
                if dirty is not None:
                    self.add(key, dirty.full, dirty.priority)
                self._queue.task_done()  # after the re-add, so drained() sees it
