"""Shared steps of the video chat tests: sockets on the real ASGI app and real Redis."""

from __future__ import annotations

from typing import Any

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
