"""Audio under uvicorn takes the raw path (realtime.rawsocket): the real app served in the
test's event loop, real sockets; the relay's own counters show which path each packet took,
and the listener reads the talker's bytes unchanged."""

from __future__ import annotations

import asyncio

import pytest

from config.asgi import application
from tests.voice.helpers import packet
from tests.voice.test_processes import Client
from voice.relay import get_relay

pytestmark = pytest.mark.django_db(transaction=True)


class Server:
    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.url = self.ws_url.replace("ws://", "http://")


async def test_listeners_get_audio_written_straight_to_their_sockets(
    uvicorn_in_loop, amake_user, make_channel
):
    server = Server(await uvicorn_in_loop(application))
    talker_user, *listener_users = [await amake_user() for _ in range(3)]
    channel = await make_channel(talker_user)
    talker = await Client.open(server, talker_user)
    listeners = [await Client.open(server, u) for u in listener_users]
    for c in (talker, *listeners):
        await c.join(channel)
    before = get_relay().stats.raw

    tx = await talker.take()
    for c in listeners:  # announced through the relay, as a raw text frame
        assert (await c.expect("floor.taken"))["tx_id"] == tx
    sent = [packet(tx, i, last=i == 4) for i in range(5)]
    for p in sent:
        await talker.ws.send(p)
    for c in listeners:
        assert await c.binaries() == sent
    assert await talker.binaries(timeout=0.2) == []  # a talker does not hear itself
    assert get_relay().stats.raw - before == len(sent) * len(listeners)

    # Announcements are framed once and written raw too, interleaved whole with the audio.
    await talker.send(type="floor.release", tx_id=tx)
    for c in listeners:
        assert (await c.expect("floor.released"))["tx_id"] == tx
    for c in (talker, *listeners):
        await c.close()


async def test_the_grant_is_written_straight_to_the_talkers_socket(
    uvicorn_in_loop, amake_user, make_channel, monkeypatch
):
    """200 presses at once: floor.granted goes out as floor.taken does (framed here, written
    to the transport), not through the consumer's ASGI send and its layers."""
    from voice.consumers import VoiceConsumer

    through_asgi: list[str] = []
    original = VoiceConsumer.send

    async def send(self, text_data=None, bytes_data=None, close=False):  # type: ignore[no-untyped-def]
        if text_data is not None:
            through_asgi.append(text_data)
        await original(self, text_data=text_data, bytes_data=bytes_data, close=close)

    monkeypatch.setattr(VoiceConsumer, "send", send)
    server = Server(await uvicorn_in_loop(application))
    talker_user, listener_user = await amake_user(), await amake_user()
    channel = await make_channel(talker_user)
    talker, listener = (
        await Client.open(server, talker_user),
        await Client.open(server, listener_user),
    )
    for c in (talker, listener):
        await c.join(channel)
    tx = await talker.take()
    assert (await listener.expect("floor.taken"))["tx_id"] == tx
    assert not [t for t in through_asgi if "floor.granted" in t], through_asgi
    assert [t for t in through_asgi if "channel.joined" in t]  # the rest still goes that way
    for c in (talker, listener):
        await c.close()


async def test_a_crowds_joins_reach_a_member_in_one_write_not_one_send_each(
    uvicorn_in_loop, amake_user, make_channel, monkeypatch
):
    """A reconnect storm: the joins announced together (voice.announce) are written to each
    member's socket at once, framed as before, not one ASGI send a joiner."""
    from voice import announce
    from voice.consumers import VoiceConsumer

    through_asgi: list[str] = []
    original = VoiceConsumer.send

    async def send(self, text_data=None, bytes_data=None, close=False):  # type: ignore[no-untyped-def]
        if text_data is not None:
            through_asgi.append(text_data)
        await original(self, text_data=text_data, bytes_data=bytes_data, close=close)

    monkeypatch.setattr(VoiceConsumer, "send", send)
    server = Server(await uvicorn_in_loop(application))
    owner = await amake_user()
    channel = await make_channel(owner)
    member = await Client.open(server, owner)
    await member.join(channel)
    users = [await amake_user() for _ in range(4)]
    crowd = [await Client.open(server, u) for u in users]
    announcer = announce.current()
    held = asyncio.Event()
    original_send = announcer._send

    async def after_all_joined(channel_id: int) -> None:  # the crowd's joins queue meanwhile
        await held.wait()
        await original_send(channel_id)

    monkeypatch.setattr(announcer, "_send", after_all_joined)
    for c in crowd:
        await c.join(channel)
    held.set()
    heard = [(await member.expect("member.joined"))["member"]["user_id"] for _ in crowd]
    assert sorted(heard) == sorted(u.pk for u in users)
    assert not [t for t in through_asgi if "member.joined" in t], through_asgi
    assert [t for t in through_asgi if "channel.joined" in t]  # the rest still goes that way
    for c in (member, *crowd):
        await c.close()
