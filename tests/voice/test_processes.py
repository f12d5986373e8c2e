"""Floor control and audio across TWO real daphne processes sharing Redis and the database:
the floor is one per channel whoever's process holds it, and is released on release,
disconnect and at the maximum length."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import session_cookie_for
from tests.voice.helpers import packet

pytestmark = pytest.mark.django_db(transaction=True)


class Client:
    """A CBLINE socket over a real TCP connection to one server process."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, server: Any, user: Any) -> Client:
        cookie = await sync_to_async(session_cookie_for)(user)
        ws = await connect(
            f"{server.ws_url}/ws/cbline/",
            origin=server.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
            compression=None,
        )
        return cls(ws)

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(self, type_: str, timeout: float = 5) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {type_} frame within {timeout}s")
            frame = await asyncio.wait_for(self.ws.recv(), left)
            if isinstance(frame, bytes):
                continue
            msg = json.loads(frame)
            if msg["type"] == type_:
                return msg
            if msg["type"] == "error":
                raise AssertionError(f"error while waiting for {type_}: {msg}")

    async def error(self, code: str) -> dict[str, Any]:
        msg = await self.expect("error")
        assert msg["code"] == code, msg
        return msg

    async def binaries(self, timeout: float = 0.7) -> list[bytes]:
        out = []
        while True:
            try:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
            except TimeoutError:
                return out
            if isinstance(frame, bytes):
                out.append(frame)

    async def join(self, channel: Any) -> dict[str, Any]:
        await self.send(type="channel.join", channel_id=channel.pk)
        return await self.expect("channel.joined")

    async def take(self) -> int:
        await self.send(type="floor.request", mode="webcodecs")
        return int((await self.expect("floor.granted"))["tx_id"])

    async def close(self) -> None:
        await self.ws.close()


async def _setup(asgi_servers, amake_user, make_channel, env=None):  # type: ignore[no-untyped-def]
    one, two = asgi_servers(env), asgi_servers(env)
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await Client.open(one, a), await Client.open(two, b)
    await ca.join(channel)
    await cb.join(channel)
    return channel, (a, b), (ca, cb)


async def test_one_talker_across_processes(asgi_servers, amake_user, make_channel):
    _, (a, b), (ca, cb) = await _setup(asgi_servers, amake_user, make_channel)
    tx_a = await ca.take()
    taken = await cb.expect("floor.taken")
    assert taken["user_id"] == a.pk and taken["tx_id"] == tx_a

    # While A holds the floor, B (on the other process) gets busy.
    await cb.send(type="floor.request", mode="webcodecs")
    await cb.error("busy")
    # B's packets are refused; A's cross to B's process.
    await cb.ws.send(packet(tx_a, 0))
    await cb.error("no_floor")
    sent = [packet(tx_a, i, last=i == 2) for i in range(3)]
    for p in sent:
        await ca.ws.send(p)
    assert await cb.binaries() == sent

    await ca.send(type="floor.release", tx_id=tx_a)
    released = await cb.expect("floor.released")
    assert released["reason"] == "released" and released["user_id"] == a.pk
    # Now B can talk, and A hears it.
    tx_b = await cb.take()
    assert tx_b != tx_a
    assert (await ca.expect("floor.taken"))["user_id"] == b.pk
    p = packet(tx_b, 0)
    await cb.ws.send(p)
    assert await ca.binaries() == [p]
    await ca.close()
    await cb.close()


async def test_floor_released_when_the_talker_disconnects(asgi_servers, amake_user, make_channel):
    _, _, (ca, cb) = await _setup(asgi_servers, amake_user, make_channel)
    tx_a = await ca.take()
    await cb.expect("floor.taken")
    await ca.ws.close()
    # Waits on the event: a loaded machine took over the default 5 s once.
    released = await cb.expect("floor.released", timeout=30)
    assert released["tx_id"] == tx_a and released["reason"] == "disconnected"
    assert await cb.take()
    await cb.close()


async def test_floor_released_at_maximum_length(asgi_servers, amake_user, make_channel):
    _, _, (ca, cb) = await _setup(
        asgi_servers, amake_user, make_channel, {"VOICE_MAX_TRANSMISSION_SECONDS": "1"}
    )
    tx_a = await ca.take()
    await cb.expect("floor.taken")
    await ca.ws.send(packet(tx_a, 0))
    released = await cb.expect("floor.released", timeout=5)
    assert released["tx_id"] == tx_a and released["reason"] == "timeout"
    assert 900 <= released["duration_ms"] < 3000
    await ca.ws.send(packet(tx_a, 1))
    await ca.error("no_floor")
    assert await cb.take()
    await ca.close()
    await cb.close()


async def test_simultaneous_requests_grant_exactly_one(asgi_servers, amake_user, make_channel):
    one, two = asgi_servers(), asgi_servers()
    users = [await amake_user() for _ in range(6)]
    channel = await make_channel(users[0])
    clients = [await Client.open(one if i % 2 else two, u) for i, u in enumerate(users)]
    for c in clients:
        await c.join(channel)
    for c in clients:
        await c.send(type="floor.request", mode="webcodecs")

    async def outcome(c: Client) -> str:
        while True:
            msg = json.loads(await asyncio.wait_for(c.ws.recv(), 5))
            if msg["type"] == "floor.granted":
                return "granted"
            if msg["type"] == "error":
                assert msg["code"] == "busy"
                return "busy"

    results = await asyncio.gather(*(outcome(c) for c in clients))
    assert sorted(results) == ["busy"] * 5 + ["granted"]
    for c in clients:
        await c.close()
