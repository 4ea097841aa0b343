"""Stopping a store's background work always returns, even when a cancellation is swallowed.

On Python 3.11 `asyncio.wait_for` returns its inner result instead of raising when a cancellation
arrives as that result does, so a loop stopped by a single cancellation can run on forever.
"""

from __future__ import annotations

import asyncio

from statestore_sidecar.stores.sql.cleanup import Cleaner
from statestore_sidecar.tasks import cancel_and_wait


async def test_a_loop_that_swallows_a_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1  # what wait_for does when its result lands with the cancel
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()
    assert swallowed == 1


async def test_a_task_that_failed_is_stopped_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("already gone")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done()


async def test_cleaner_stops_while_its_sweep_swallows_the_cancellation() -> None:
    sweeping = asyncio.Event()

    async def sweep() -> int:
        sweeping.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 0  # the driver's wait_for handing back a result instead of the cancellation
        return 0

    cleaner = Cleaner("test", 0.01, sweep)
    cleaner.start()
    await asyncio.wait_for(sweeping.wait(), 5)
    await asyncio.wait_for(cleaner.stop(), 5)
