"""The PTT audio relay against the run's real Redis: delivery, filtering, storage with a TTL,
replay, isolation of broken sockets, reconnection, and packets crossing processes."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime.fanout import RespError
from realtime.redis import get_async_redis
from tests.waiting import until
from voice import services, transmissions
from voice.keys import pubsub_channel, tx_audio_key, tx_key
from voice.relay import Relay, close_relay, get_relay

ROOT = Path(__file__).resolve().parents[2]


def packet(
    tx_id: int, seq: int, payload: bytes = b"", *, kind: int = 1, last: bool = False
) -> bytes:
    """An audio frame as the protocol defines it: 16-byte header, then the payload."""
    body = payload or bytes((seq + i) % 256 for i in range(104))
    return struct.pack(">BBHId", kind, int(last), seq, tx_id, time.time() * 1000) + body


class Socket:
    """Stands in for a listener's WebSocket: records the binary frames (audio) and the text
    frames (floor announcements) written to it."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.channel_name = f"test.socket.{user_id}"
        self.frames: list[bytes] = []
        self.texts: list[dict[str, Any]] = []
        self.order: list[str] = []  # "audio" or the text frame's type, as they came

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.texts.append(json.loads(text_data))
            self.order.append(self.texts[-1]["type"])
            return
        assert bytes_data is not None
        self.frames.append(bytes_data)
        self.order.append("audio")


class BrokenSocket(Socket):
    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise ConnectionResetError("peer went away")


class StalledSocket(Socket):
    """A socket whose buffer is full until `unblock` is set."""

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id)
        self.unblock = asyncio.Event()

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.unblock.wait()
        await super().send(text_data, bytes_data)


async def barrier(relay: Relay, channel_id: int, tx_id: int, *sockets: Socket) -> bytes:
    """A transmission to everyone on the channel, after what the test sent: once each of
    `sockets` has its packet, Redis has delivered everything published on the channel before
    it (one subscription, in order), so what a socket has not got by then it never will."""
    await relay.transmission_start(channel_id, tx_id, talker_id=99, recipients=None)
    mark = packet(tx_id, 0, b"barrier")
    await relay.audio(channel_id, tx_id, mark)
    await until(lambda: all(s.frames[-1:] == [mark] for s in sockets), what="the barrier")
    return mark


async def gone(redis: Any, *keys: str) -> bool:
    return await redis.exists(*keys) == 0


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    yield get_relay()
    await close_relay()


async def test_one_relay_per_event_loop(relay: Relay) -> None:
    assert get_relay() is relay


async def test_a_live_transmission_holds_off_scheduled_full_collections(relay: Relay) -> None:
    """realtime/gc_policy.py waits for a quiet moment while audio passes through this process."""
    await relay.join(12, Socket(1))
    assert not relay.gc_should_wait()
    await relay.transmission_start(12, 601, talker_id=2, recipients=None)
    await until(relay.gc_should_wait)
    await relay.transmission_end(12, 601)
    await until(lambda: not relay.gc_should_wait())


async def test_floor_announcements_reach_every_local_socket_but_the_talkers_own(
    relay: Relay,
) -> None:
    talker, other_tab, near, far = Socket(3), Socket(3), Socket(4), Socket(5)
    other_tab.channel_name = "test.socket.3-second-tab"
    for s in (talker, other_tab, near, far):
        await relay.join(30, s)
    await relay.transmission_start(
        30, 701, talker_id=3, recipients={4}, nickname="Ann", origin=talker.channel_name
    )
    await relay.audio(30, 701, packet(701, 0))
    await until(lambda: len(near.frames) == 1)
    taken = near.texts[0]
    assert taken["type"] == "floor.taken" and taken["tx_id"] == 701
    assert taken["user_id"] == 3 and taken["nickname"] == "Ann" and taken["mode"] == "webcodecs"
    assert taken["in_range"] is True
    assert near.order == ["floor.taken", "audio"]  # who talks, before what they say
    # Out of range: told only that someone out of range talks (no id, no name), hears
    # nothing. The talker's own socket is told nothing (it got floor.granted); the same
    # user's other tab is told like a listener.
    assert (
        far.texts == [{**taken, "user_id": None, "nickname": "", "in_range": False}]
        and far.frames == []
    )
    assert other_tab.texts == [taken] and talker.texts == []

    await relay.transmission_end(30, 701, talker_id=3, duration_ms=1234, reason="timeout")
    released = {
        "type": "floor.released",
        "tx_id": 701,
        "user_id": 3,
        "duration_ms": 1234,
        "reason": "timeout",
        "in_range": True,
    }
    anonymous = {**released, "user_id": None, "duration_ms": 0, "in_range": False}
    await until(lambda: all(s.texts[-1:] == [released] for s in (talker, other_tab, near)))
    await until(lambda: far.texts[-1:] == [anonymous])
    assert relay.stats.delivered == 1  # the counters are audio's


async def test_listeners_get_the_bytes_unchanged_and_the_talker_gets_nothing(relay: Relay) -> None:
    alice, bob, talker = Socket(1), Socket(2), Socket(3)
    for s in (alice, bob, talker):
        await relay.join(10, s)
    await relay.transmission_start(10, 501, talker_id=3, recipients=None)
    sent = [packet(501, seq) for seq in range(20)] + [packet(501, 20, b"\x00\xffend", last=True)]
    for p in sent:
        await relay.audio(10, 501, p)
    await relay.transmission_end(10, 501)

    await until(lambda: len(alice.frames) == len(sent) and len(bob.frames) == len(sent))
    assert alice.frames == sent
    assert bob.frames == sent
    assert talker.frames == [await barrier(relay, 10, 901, talker)]


async def test_only_recipients_hear_a_narrowed_transmission(relay: Relay) -> None:
    near, far, talker = Socket(1), Socket(2), Socket(3)
    for s in (near, far, talker):
        await relay.join(11, s)
    await relay.transmission_start(11, 502, talker_id=3, recipients={1, 3})
    for seq in range(5):
        await relay.audio(11, 502, packet(502, seq))

    await until(lambda: len(near.frames) == 5)
    mark = await barrier(relay, 11, 902, far, talker)
    assert far.frames == [mark]
    assert talker.frames == [mark]


async def test_other_channels_hear_nothing(relay: Relay) -> None:
    here, elsewhere = Socket(1), Socket(2)
    await relay.join(12, here)
    await relay.join(13, elsewhere)
    await relay.transmission_start(12, 503, talker_id=9, recipients=None)
    await relay.audio(12, 503, packet(503, 0))

    await until(lambda: len(here.frames) == 1)
    assert elsewhere.frames == [await barrier(relay, 13, 903, elsewhere)]


async def test_leave_stops_delivery_and_unsubscribes_the_last_listener(relay: Relay) -> None:
    staying, leaving = Socket(1), Socket(2)
    await relay.join(14, staying)
    await relay.join(14, leaving)
    await relay.transmission_start(14, 504, talker_id=9, recipients=None)
    await relay.audio(14, 504, packet(504, 0))
    await until(lambda: len(staying.frames) == 1 and len(leaving.frames) == 1)

    await relay.leave(14, leaving)
    await relay.audio(14, 504, packet(504, 1))
    await until(lambda: len(staying.frames) == 2)
    await barrier(relay, 14, 904, staying)
    assert len(leaving.frames) == 1

    redis = get_async_redis()
    [(_, subscribers)] = await redis.pubsub_numsub(pubsub_channel(14))
    assert subscribers == 1
    await relay.leave(14, staying)
    await until(lambda: relay.local_listener_count(14) == 0)

    async def numsub_is(count: int) -> bool:
        [(_, n)] = await redis.pubsub_numsub(pubsub_channel(14))
        return int(n) == count

    await until(lambda: numsub_is(0), what="the channel unsubscribed after the last leave")


async def test_audio_is_stored_briefly_then_expires(relay: Relay, settings) -> None:  # type: ignore[no-untyped-def]
    settings.VOICE_AUDIO_TTL_SECONDS = 1
    await relay.transmission_start(15, 505, talker_id=9, recipients={1})
    await relay.audio(15, 505, packet(505, 0))
    redis = get_async_redis()
    assert await redis.llen(tx_audio_key(505)) == 1
    assert 0 < await redis.pttl(tx_audio_key(505)) <= 1000
    assert 0 < await redis.pttl(tx_key(505)) <= 1000

    # Time passes beyond the TTL: the keys expire as Redis would expire them.
    for k in (tx_audio_key(505), tx_key(505)):
        assert await redis.pexpire(k, 1)
    await until(lambda: gone(redis, tx_audio_key(505), tx_key(505)), what="the keys expired")
    assert await transmissions.replay(505) is None
    assert await transmissions.may_hear(505, 1) is False


async def test_replay_returns_meta_and_packets_in_order(relay: Relay) -> None:
    await relay.transmission_start(16, 506, talker_id=9, recipients={1, 2}, mode="mediarecorder")
    sent = [packet(506, seq, kind=2) for seq in range(30)]
    for p in sent:
        await relay.audio(16, 506, p)
    await relay.transmission_end(16, 506)

    replayed = await transmissions.replay(506)
    assert replayed is not None
    meta, packets = replayed
    assert packets == sent
    assert meta["tx_id"] == 506
    assert meta["channel_id"] == 16
    assert meta["talker_id"] == 9
    assert meta["mode"] == "mediarecorder"
    assert meta["everyone"] is False
    assert meta["duration_ms"] >= 0
    assert [r["tx_id"] for r in await transmissions.recent(16)] == [506]


async def test_may_hear_follows_the_stored_recipients(relay: Relay) -> None:
    await relay.transmission_start(17, 507, talker_id=9, recipients={1})
    for uid in (2, 4):  # joined to the channel when 508 starts; 3 is not
        await services.channel_socket_add(channel_id=17, socket=f"s{uid}", user_id=uid, country="")
    await relay.transmission_start(17, 508, talker_id=9, recipients=None, excluded=frozenset({4}))
    assert await transmissions.may_hear(507, 1) is True
    assert await transmissions.may_hear(507, 2) is False
    assert await transmissions.may_hear(507, 9) is True  # the talker
    assert await transmissions.may_hear(508, 2) is True  # everyone joined at the press ...
    assert await transmissions.may_hear(508, 3) is False  # ... not a later joiner
    assert await transmissions.may_hear(508, 4) is False  # ... nor the banned
    assert await transmissions.may_hear(999, 1) is False  # unknown or expired


async def test_a_packet_for_another_transmission_is_refused(relay: Relay) -> None:
    with pytest.raises(ValueError, match="another transmission"):
        await relay.audio(18, 509, packet(510, 0))
    with pytest.raises(ValueError, match="not an audio packet"):
        await relay.audio(18, 509, b"\x00" + packet(509, 0)[1:])


async def test_a_broken_listener_does_not_stop_the_others(relay: Relay) -> None:
    broken, fine = BrokenSocket(1), Socket(2)
    await relay.join(19, broken)
    await relay.join(19, fine)
    await relay.transmission_start(19, 511, talker_id=9, recipients=None)
    for seq in range(10):
        await relay.audio(19, 511, packet(511, seq))

    await until(lambda: len(fine.frames) == 10)
    assert relay.stats.errors == 10


async def test_a_stalled_listener_does_not_hold_up_the_others(relay: Relay) -> None:
    stalled, fine = StalledSocket(1), Socket(2)
    await relay.join(20, stalled)
    await relay.join(20, fine)
    await relay.transmission_start(20, 512, talker_id=9, recipients=None)
    sent = [packet(512, seq) for seq in range(10)]
    for p in sent:
        await relay.audio(20, 512, p)

    await until(lambda: len(fine.frames) == 10)
    assert stalled.frames == []
    stalled.unblock.set()  # its buffer drains: it gets every packet, in order
    await until(lambda: len(stalled.frames) == 10)
    assert stalled.frames == sent


async def test_a_late_subscriber_learns_the_recipients_from_redis(relay: Relay) -> None:
    # The start message went out before this process had a listener in the channel.
    await relay.transmission_start(21, 513, talker_id=9, recipients={1})
    allowed, other = Socket(1), Socket(2)
    await relay.join(21, allowed)
    await relay.join(21, other)
    await relay.audio(21, 513, packet(513, 0))

    await until(lambda: len(allowed.frames) == 1)
    assert other.frames == [await barrier(relay, 21, 913, other)]


async def test_delivery_resumes_after_the_pubsub_connection_drops(relay: Relay) -> None:
    listener = Socket(1)
    await relay.join(22, listener)
    await relay.transmission_start(22, 514, talker_id=9, recipients=None)
    await relay.audio(22, 514, packet(514, 0))
    await until(lambda: len(listener.frames) == 1)

    redis = get_async_redis()
    [conn] = [c for c in await redis.client_list() if c["name"] == relay.client_name]
    assert await redis.client_kill_filter(_id=conn["id"]) == 1

    async def resubscribed() -> bool:
        [(_, n)] = await redis.pubsub_numsub(pubsub_channel(22))
        return int(n) == 1

    async def heard_again() -> bool:
        # Keep talking until the relay is back: packets sent while it was away are lost,
        # which is why stored audio exists for replay.
        await relay.audio(22, 514, packet(514, 1))
        return await resubscribed() and len(listener.frames) > 1

    await until(heard_again, timeout=10, what="the relay reconnected")
    assert listener.frames[-1][2:4] == (1).to_bytes(2, "big")


async def test_packets_cross_processes_through_redis(relay: Relay) -> None:
    """Another process (its own interpreter, Django and Relay) talks; this one listens."""
    listener, other = Socket(1), Socket(2)
    await relay.join(23, listener)
    await relay.join(23, other)
    script = textwrap.dedent(
        """
        import asyncio, struct, time
        import django
        django.setup()
        from voice.relay import get_relay

        async def main():
            relay = get_relay()
            await relay.transmission_start(23, 515, talker_id=9, recipients={1})
            for seq in range(25):
                head = struct.pack(">BBHId", 1, int(seq == 24), seq, 515, time.time() * 1000)
                await relay.audio(23, 515, head + bytes([seq]) * 100)
            await relay.transmission_end(23, 515)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()

    await until(lambda: len(listener.frames) == 25)
    assert [f[2:4] for f in listener.frames] == [seq.to_bytes(2, "big") for seq in range(25)]
    assert all(f[16:] == bytes([i]) * 100 for i, f in enumerate(listener.frames))
    assert other.frames == []  # not a recipient, in the other process's terms too


async def test_audio_goes_out_in_one_round_trip_and_reports_redis_errors(relay: Relay) -> None:
    listener = Socket(1)
    await relay.join(24, listener)
    await relay.transmission_start(24, 516, talker_id=9, recipients=None)
    await relay.audio(24, 516, packet(516, 0))
    await until(lambda: len(listener.frames) == 1)
    # A wrong type at the audio key makes RPUSH fail: the caller hears about it.
    await get_async_redis().set(tx_audio_key(517), "not a list")
    with pytest.raises(RespError, match="WRONGTYPE"):
        await relay.audio(24, 517, packet(517, 0))
