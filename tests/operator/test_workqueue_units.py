"""The reconcile work queue (pure asyncio): dedup, re-run after a running pass, bounded workers."""

from __future__ import annotations

import asyncio

from statestore_operator.workqueue import LOW, Key, WorkQueue


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


async def test_resync_keys_wait_for_every_trigger_and_a_trigger_moves_one_up() -> None:
    calls: list[tuple[Key, bool]] = []
    gate = asyncio.Event()

    async def handle(key: Key, full: bool) -> None:
        calls.append((key, full))
        await gate.wait()

    queue = WorkQueue(handle, workers=1)
    queue.start()
    try:
        queue.add(("ns", "busy"))
        await asyncio.sleep(0.01)  # the only worker is busy
        for name in ("r1", "r2", "r3"):
            queue.add(("ns", name), priority=LOW)  # a resync round
        queue.add(("ns", "new"))  # a new Component, after the round
        queue.add(("ns", "r3"), full=False)  # its Deployment moved: ahead of the round, and still full
        queue.add(("ns", "r3"), priority=LOW)  # the resync again: stays up
        queue.add(("ns", "busy"), priority=LOW)  # running: once more afterwards, at low priority
        queue.add(("ns", "r1"), priority=LOW)  # already waiting: not twice
        gate.set()
        await asyncio.wait_for(queue.drained(), 5)
        assert calls == [
            (("ns", "busy"), True),
            (("ns", "new"), True),
            (("ns", "r3"), True),
            (("ns", "r1"), True),
            (("ns", "r2"), True),
            (("ns", "busy"), True),
        ]
        assert len(queue) == 0
    finally:
        await queue.stop()


async def test_a_key_moved_up_then_taken_is_not_run_again_by_its_old_entry() -> None:
    calls: list[Key] = []

    async def handle(key: Key, full: bool) -> None:
        calls.append(key)

    queue = WorkQueue(handle, workers=1)
    queue.add(("ns", "a"), priority=LOW)
    queue.add(("ns", "a"))  # moved up: two entries, one key
    queue.add(("ns", "b"), priority=LOW)
    queue.start()
    try:
        await asyncio.wait_for(queue.drained(), 5)
        assert calls == [("ns", "a"), ("ns", "b")]
    finally:
        await queue.stop()
