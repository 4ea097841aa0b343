"""The reconcile work queue (pure asyncio): dedup, re-run after a running pass, bounded workers."""

from __future__ import annotations

import asyncio

from statestore_operator.workqueue import Key, WorkQueue


async def test_a_burst_for_one_key_is_one_pass_plus_at_most_one_more() -> None:
    calls: list[Key] = []
    gate = asyncio.Event()

    async def handle(key: Key, full: bool) -> None:
        calls.append(key)
        await gate.wait()

    queue = WorkQueue(handle, workers=4)
    queue.start()
    try:
        key = ("ns", "a")
        queue.add(key)
        await asyncio.sleep(0.01)  # the first pass is running
        for _ in range(50):
            queue.add(key)  # all collapse into one more pass
        gate.set()
        await asyncio.wait_for(queue.drained(), 5)
        assert calls == [key, key]
    finally:
        await queue.stop()


async def test_workers_bound_the_concurrency() -> None:
    running = peak = 0

    async def handle(key: Key, full: bool) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    queue = WorkQueue(handle, workers=3)
    queue.start()
    try:
        for i in range(20):
            queue.add(("ns", str(i)))
        await asyncio.wait_for(queue.drained(), 5)
        assert peak == 3
    finally:
        await queue.stop()


async def test_a_failing_handler_keeps_its_worker_and_add_after_requeues() -> None:
    calls: list[Key] = []

    async def handle(key: Key, full: bool) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("boom")

    queue = WorkQueue(handle, workers=1)
    queue.start()
    try:
        queue.add(("ns", "a"))
        queue.add_after(("ns", "b"), 0.05)
        await asyncio.sleep(0.2)
        assert calls == [("ns", "a"), ("ns", "b")]
    finally:
        await queue.stop()


async def test_a_full_request_wins_over_status_refreshes() -> None:
    calls: list[tuple[Key, bool]] = []
    gate = asyncio.Event()

    async def handle(key: Key, full: bool) -> None:
        calls.append((key, full))
        await gate.wait()

    queue = WorkQueue(handle, workers=1)
    queue.start()
    try:
        queue.add(("ns", "a"), full=False)
        queue.add(("ns", "b"), full=False)
        queue.add(("ns", "b"), full=True)  # while waiting
        queue.add(("ns", "c"), full=False)
        await asyncio.sleep(0.01)  # a is running
        queue.add(("ns", "a"), full=False)  # while running: a status refresh afterwards
        gate.set()
        await asyncio.wait_for(queue.drained(), 5)
        assert calls == [
            (("ns", "a"), False),
            (("ns", "b"), True),
            (("ns", "c"), False),
            (("ns", "a"), False),
        ]
    finally:
        await queue.stop()
