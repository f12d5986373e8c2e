"""Waiting in tests: on a condition, with a deadline, never on a fixed sleep.

A poll is for when there is nothing to wait on (another process, Redis, a socket's
buffer); each one fails with a message when its deadline passes, so a broken behaviour
is a failure, not a hang. Time-based behaviour (TTLs, deadlines) is tested by moving the
clock or expiring the key, not by waiting for the time to pass."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.01


async def until(
    predicate: Callable[[], object | Awaitable[object]], timeout: float = 5.0, what: str = ""
) -> None:
    """Return once `predicate()` (a function or a coroutine function) is true; fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or 'condition'}")
        await asyncio.sleep(POLL_SECONDS)


def until_sync(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """`until` for synchronous code (other processes, threads, subprocess servers)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or 'condition'}")
        time.sleep(POLL_SECONDS)
