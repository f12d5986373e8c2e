"""An asyncio event loop on a virtual clock, for code whose behaviour is a schedule.

`loop.time()` starts at 0 and moves only when the loop would otherwise wait for its next
timer: it jumps to that timer at once. So `await asyncio.sleep(60)` takes no wall time, and
everything timed by the loop's clock (asyncio.sleep, call_later, loop.time()) happens in the
same order and at the same virtual moments however busy the machine is. Code under test must
read the time as `loop.time()` (asyncio's own monotonic clock in production)."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: a wait for the next timer becomes a jump of the virtual clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self._loop.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on a virtual clock."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
