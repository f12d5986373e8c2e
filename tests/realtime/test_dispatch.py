"""realtime.consumers.dispatch_from, the loop every socket idles in: Channels'
await_many_dispatch semantics (every source's messages in order, a source asked again only
once its message is handled, pending receives cancelled at the end) without a task or
asyncio.wait per idle socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.exceptions import StopConsumer

from realtime.consumers import dispatch_from


class Source:
    """A receive callable that hands out futures the test resolves."""

    def __init__(self) -> None:
        self.asked: list[asyncio.Future[Any]] = []

    def __call__(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.asked.append(future)
        return future


async def test_messages_of_both_sources_are_handled_in_turn_and_the_rest_cancelled() -> None:
    client, layer = Source(), Source()
    handled: list[str] = []
    release = asyncio.Event()
    in_handler = asyncio.Event()

    async def dispatch(message: str) -> None:
        handled.append(message)
        if message == "slow":
            in_handler.set()
            await release.wait()
        if message == "stop":
            raise StopConsumer

    loop = asyncio.create_task(dispatch_from([client, layer], dispatch))
    await asyncio.sleep(0)
    assert len(client.asked) == len(layer.asked) == 1
    assert not any(isinstance(f, asyncio.Task) for f in client.asked + layer.asked)

    client.asked[0].set_result("slow")
    await in_handler.wait()
    layer.asked[0].set_result("event-1")
    await asyncio.sleep(0)
    # Busy with the client's message: the client is not asked again, the layer's waits.
    assert len(client.asked) == 1 and handled == ["slow"]
    release.set()
    while len(layer.asked) < 2:
        await asyncio.sleep(0)
    assert handled == ["slow", "event-1"] and len(client.asked) == 2

    client.asked[1].set_result("stop")
    with pytest.raises(StopConsumer):
        await loop
    assert handled == ["slow", "event-1", "stop"]
    assert layer.asked[1].cancelled() and len(client.asked) == 2
