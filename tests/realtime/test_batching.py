"""realtime.batching: a batch a request in flight, and one batcher per event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from realtime.batching import Batcher, PerLoop


class _Echo(Batcher[int]):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def send_batch(self, items: list[int]) -> list[Any]:
        self.batches.append(items)
        if len(self.batches) == 1:
            await self.release.wait()  # the first batch in flight; the rest pile up
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_calls_made_while_a_batch_is_in_flight_go_together_in_the_next():
    echo = _Echo()
    first = asyncio.ensure_future(echo.call(1))
    while not echo.batches:
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(echo.call(i)) for i in (2, -3, 4)]
    await asyncio.sleep(0)
    echo.release.set()
    assert await first == 10
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError)  # an item that failed fails alone
    assert echo.batches == [[1], [2, -3, 4]]


def test_per_loop_makes_one_per_event_loop():
    made = PerLoop(object)

    async def twice() -> tuple[object, object]:
        return made.get(), made.get()

    a1, a2 = asyncio.run(twice())
    b1, _ = asyncio.run(twice())
    assert a1 is a2
    assert b1 is not a1
