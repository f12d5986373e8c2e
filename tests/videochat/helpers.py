"""Shared steps of the video chat tests: sockets on the real ASGI app and real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from tests.conftest import acommunicator

WS = "/ws/videochat/"


async def connect(user: Any, **kwargs: Any) -> Any:
    comm = await acommunicator(WS, user, **kwargs)
    ok, _ = await comm.connect()
    assert ok
    return comm


async def ready(user: Any, **hello: Any) -> tuple[Any, dict[str, Any]]:
    """A connected socket that has said hello; returns it and the `ready` frame."""
    comm = await connect(user)
    await comm.send_json_to({"type": "hello", **hello})
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "ready", frame
    return comm, frame


async def join(comm: Any) -> dict[str, Any]:
    await comm.send_json_to({"type": "queue.join"})
    return await comm.receive_json_from(timeout=3)


async def pair(a: Any, b: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """a waits, b arrives: returns (a's match.found, b's match.found)."""
    waiting = await join(a)
    assert waiting["type"] == "queue.waiting", waiting
    found_b = await join(b)
    assert found_b["type"] == "match.found", found_b
    found_a = await a.receive_json_from(timeout=3)
    assert found_a["type"] == "match.found", found_a
    return found_a, found_b


async def close_all(*comms: Any) -> None:
    for comm in comms:
        await comm.disconnect()


# The channel layer's own receive loop (a blocking pop, its in-flight backup) and pool health
# checks: the layer's upkeep of every process, not what a message costs the product.
_UPKEEP = (b"BZPOPMIN", b"$inflight", b"PING")


@contextmanager
def redis_round_trips(*, upkeep: bool = False) -> Iterator[list[bytes]]:
    """Every request this process writes to Redis while the block runs (one command, or a
    whole pipeline, is one round trip), the channel layer's receive loop left out unless
    `upkeep`."""
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | str) else b"".join(command)
        packed = packed.encode() if isinstance(packed, str) else packed
        if upkeep or not any(word in packed for word in _UPKEEP):
            sent.append(packed)
        await original(self, command, check_health)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counting)
        yield sent
