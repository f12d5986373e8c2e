"""realtime.wakeup: long polls woken across processes through one Redis subscription per
event loop (the real Redis of the test run)."""

from __future__ import annotations

import asyncio

import pytest

from realtime import wakeup

pytestmark = pytest.mark.asyncio


async def test_a_signal_wakes_the_waiters_of_its_topic_only():
    async with (
        wakeup.watching("t.1") as one,
        wakeup.watching("t.1") as also,
        wakeup.watching("t.2") as other,
    ):
        assert wakeup.waiting("t.1") and wakeup.waiting("t.2")
        # From a thread, as a service's on-commit callback would.
        await asyncio.to_thread(wakeup.signal, "t.1")
        await asyncio.wait_for(one.wait(), 5)
        await asyncio.wait_for(also.wait(), 5)
        # t.2's waiter was not woken: a signal of its own arrives after t.1's, in order.
        assert not other.is_set()
        await asyncio.to_thread(wakeup.signal, "t.2")
        await asyncio.wait_for(other.wait(), 5)
    assert not wakeup.waiting("t.1") and not wakeup.waiting("t.2")


async def test_a_signal_before_the_wait_but_after_watching_is_not_lost():
    async with wakeup.watching("t.3") as woken:
        await asyncio.to_thread(wakeup.signal, "t.3")  # while the caller was still reading
        await asyncio.sleep(0)
        await asyncio.wait_for(woken.wait(), 5)


async def test_the_subscription_is_closed_when_nobody_waits():
    async with wakeup.watching("t.4"):
        hub = wakeup._hub()
        task = hub.task
        assert task is not None and not task.done()
    assert hub.task is None and task.done()
