"""Helpers for CBLINE socket tests on the real ASGI app (communicators) and real servers."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import acommunicator

# A payload no other part of the system could produce: found anywhere, it came from a packet.
MARKER = b"CBLINE-AUDIO-" + os.urandom(24)


def packet(
    tx_id: int, seq: int = 0, *, kind: int = 1, last: bool = False, payload: bytes | None = None
) -> bytes:
    """An audio frame as the protocol defines it: 16-byte header, then the payload (kind 1:
    one Opus frame behind its u16 length)."""
    body = payload if payload is not None else MARKER + bytes([seq % 256]) * 40
    if kind == 1:
        body = struct.pack(">H", len(body)) + body
    return struct.pack(">BBHId", kind, int(last), seq, tx_id, time.time() * 1000) + body


async def connect(
    user: Any = None, client: tuple[str, int] | None = None, session_key: str | None = None
) -> Any:
    comm = await acommunicator("/ws/cbline/", user, session_key=session_key)
    if client is not None:
        comm.scope["client"] = list(client)  # what daphne puts there: the peer's address
    ok, _ = await comm.connect(timeout=5)
    assert ok
    return comm


async def join(comm: Any, channel: Any, password: str | None = None) -> dict[str, Any]:
    await comm.send_json_to(
        {"type": "channel.join", "channel_id": channel.pk, "password": password}
    )
    return await expect(comm, "channel.joined")


async def joined(user: Any, channel: Any, password: str | None = None, **kw: Any) -> Any:
    """A socket that has joined `channel`; the channel.joined reply is on `comm.joined`."""
    comm = await connect(user, **kw)
    comm.joined = await join(comm, channel, password)
    return comm


async def frames(comm: Any, timeout: float = 0.3) -> list[Any]:
    """Everything waiting on `comm`: dicts for JSON frames, bytes for binary ones."""
    out: list[Any] = []
    while not await comm.receive_nothing(timeout=timeout):
        frame = await comm.receive_output()
        if frame["type"] == "websocket.close":
            out.append(frame)
        elif frame.get("bytes") is not None:
            out.append(frame["bytes"])
        else:
            out.append(json.loads(frame["text"]))
    return out


async def expect(comm: Any, type_: str, timeout: float = 5) -> dict[str, Any]:
    """The next JSON frame of `type_`; fails on an error frame (unless one is expected) and
    skips other chatter (member.* events)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no {type_} frame within {timeout}s")
        frame = await comm.receive_output(timeout=left)
        if frame.get("text") is None:
            continue
        msg = json.loads(frame["text"])
        if msg["type"] == type_:
            return msg
        if msg["type"] == "error":
            raise AssertionError(f"error while waiting for {type_}: {msg}")


async def expect_each(comm: Any, *types: str, timeout: float = 5) -> dict[str, dict[str, Any]]:
    """The first JSON frame of each of `types`, in whatever order they come. Frames through
    the relay (floor.*) do not queue behind the socket's own handler, so they may come
    before that handler's reply."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, dict[str, Any]] = {}
    while len(found) < len(types):
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no {sorted(set(types) - set(found))} within {timeout}s")
        frame = await comm.receive_output(timeout=left)
        if frame.get("text") is None:
            continue
        msg = json.loads(frame["text"])
        if msg["type"] in types and msg["type"] not in found:
            found[msg["type"]] = msg
        elif msg["type"] == "error":
            raise AssertionError(f"error while waiting for {types}: {msg}")
    return found


async def expect_error(comm: Any, code: str) -> dict[str, Any]:
    msg = await expect(comm, "error")
    assert msg["code"] == code, msg
    return msg


async def assert_alive(comm: Any) -> None:
    """The connection is still up and answering."""
    await comm.send_json_to({"type": "ping"})
    assert await expect(comm, "pong")


async def take_floor(comm: Any, mode: str = "webcodecs") -> int:
    await comm.send_json_to({"type": "floor.request", "mode": mode})
    return int((await expect(comm, "floor.granted"))["tx_id"])


async def binaries(comm: Any, timeout: float = 0.5) -> list[bytes]:
    return [f for f in await frames(comm, timeout) if isinstance(f, bytes)]


# The channel layer's receive loop and health checks: not the work of the code under test.
_UPKEEP = (b"BZPOPMIN", b"$inflight", b"PING")


@contextmanager
def redis_round_trips() -> Iterator[list[bytes]]:
    """Every request this process writes to Redis while the block runs, through redis-py (a
    command, or a whole pipeline, is one) or the relay's own connection (realtime.fanout's
    RespConnection: one `call`), each marked "redis-py " or "relay ", the channel layer's
    upkeep left out."""
    from redis.asyncio.connection import AbstractConnection

    from realtime.fanout import RespConnection

    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command
    original_call = RespConnection.call

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes | str) else b"".join(command)
        packed = packed.encode() if isinstance(packed, str) else packed
        if not any(word in packed for word in _UPKEEP):
            sent.append(b"redis-py " + packed)
        await original(self, command, check_health)

    def counting_call(self: RespConnection, payload: bytes, replies: int) -> Any:
        sent.append(b"relay " + payload)
        return original_call(self, payload, replies)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counting)
        patch.setattr(RespConnection, "call", counting_call)
        yield sent
