"""The floor's services (voice.floor), called directly against the run's real Redis and
PostgreSQL, with listeners on the real relay: every outcome of the state machine, and what
the channel hears of it. No socket is involved: the consumer only sends these outcomes."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from realtime.errors import ServiceError
from realtime.redis import get_async_redis
from tests.voice.helpers import packet
from tests.waiting import until
from voice import floor, keys, services
from voice.relay import get_relay
from voice.schemas import FloorGranted
from voice.selectors import floor_holder

pytestmark = pytest.mark.django_db(transaction=True)


class Socket:
    """A listener on the relay, as a consumer is one: records what it is sent."""

    def __init__(self, user_id: int, name: str | None = None) -> None:
        self.user_id = user_id
        self.channel_name = name or f"test.floor.{user_id}"
        self.texts: list[dict[str, Any]] = []
        self.frames: list[bytes] = []
        self.order: list[str] = []  # text types and "binary", as received

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.texts.append(json.loads(text_data))
            self.order.append(self.texts[-1]["type"])
        else:
            assert bytes_data is not None
            self.frames.append(bytes_data)
            self.order.append("binary")

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [t for t in self.texts if t["type"] == type_]


async def press(seat: floor.Seat, channel: Any, nickname: str = "talker") -> floor.FloorOutcome:
    return await floor.request(
        seat, channel=channel, nickname=nickname, mode="webcodecs", origin=f"sock.{seat.user_id}"
    )


@pytest.fixture
async def room(amake_user, make_channel):  # type: ignore[no-untyped-def]
    """A channel, its talker and a listener (both on the relay, as their sockets would be)."""
    talker, listener = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    talker_sock, listener_sock = Socket(talker.pk, f"sock.{talker.pk}"), Socket(listener.pk)
    relay = get_relay()
    await relay.join(channel.pk, talker_sock)
    await relay.join(channel.pk, listener_sock)
    return channel, talker, listener, talker_sock, listener_sock


async def test_granted_the_floor_is_leased_and_the_channel_hears_floor_taken(
    room, settings
) -> None:  # type: ignore[no-untyped-def]
    channel, talker, _, talker_sock, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    outcome = await press(seat, channel, "Alice")

    assert outcome.result == "granted" and outcome.refusal is None
    assert isinstance(outcome.reply, FloorGranted)
    tx_id = outcome.reply.tx_id
    assert outcome.reply.max_ms == settings.VOICE_MAX_TRANSMISSION_SECONDS * 1000
    assert outcome.reply.packet_ms == settings.VOICE_PACKET_MS
    assert seat.talk is outcome.talk and seat.talk is not None
    holder = await floor_holder(channel.pk)
    assert holder is not None and holder["tx_id"] == tx_id and holder["user_id"] == talker.pk
    await until(lambda: bool(listener_sock.of_type("floor.taken")))
    [taken] = listener_sock.of_type("floor.taken")
    assert taken["tx_id"] == tx_id and taken["nickname"] == "Alice"
    assert talker_sock.of_type("floor.taken") == []  # its own socket got floor.granted instead
    await floor.end(seat, "released")


async def test_busy_names_the_talker_and_spends_nothing(room, amake_user) -> None:  # type: ignore[no-untyped-def]
    channel, talker, listener, _, _ = room
    first = floor.Seat(user_id=talker.pk)
    granted = await press(first, channel, "Alice")
    seq = await get_async_redis().get(keys.tx_seq_key())

    second = floor.Seat(user_id=listener.pk)
    outcome = await press(second, channel, "Bob")
    assert outcome.result == "busy" and outcome.reply is None and second.talk is None
    assert outcome.refusal is not None and outcome.refusal.code == "busy"
    assert outcome.refusal.detail == "Alice is talking"
    assert await get_async_redis().get(keys.tx_seq_key()) == seq
    holder = await floor_holder(channel.pk)
    assert holder is not None and holder["tx_id"] == granted.reply.tx_id  # type: ignore[union-attr]
    await floor.end(first, "released")


async def test_a_second_press_while_talking_is_refused(room) -> None:  # type: ignore[no-untyped-def]
    channel, talker, _, _, _ = room
    seat = floor.Seat(user_id=talker.pk)
    granted = await press(seat, channel)
    again = await press(seat, channel)
    assert again.result == "already_talking" and again.refusal is not None
    assert again.refusal.code == "already_talking"
    assert seat.talk is granted.talk  # the transmission goes on
    await floor.end(seat, "released")


@pytest.mark.parametrize(("action", "code"), [("ban", "banned"), ("mute", "muted")])
async def test_a_sanction_made_after_the_last_press_refuses_the_next(  # type: ignore[no-untyped-def]
    room, amake_user, action, code
) -> None:
    channel, creator, member, _, _ = room
    seat = floor.Seat(user_id=member.pk)
    first = await press(seat, channel)
    assert first.result == "granted"  # the seat now caches "no sanctions"
    await floor.release(seat, tx_id=first.reply.tx_id)  # type: ignore[union-attr]

    await sync_to_async(services.channel_member_moderate)(
        channel_id=channel.pk, moderator=creator, target_id=member.pk, action=action
    )
    outcome = await press(seat, channel)
    assert outcome.result == code and outcome.refusal is not None
    assert outcome.refusal.code == code and outcome.refusal.status == 403
    assert seat.talk is None and await floor_holder(channel.pk) is None


async def test_released_frees_the_lease_and_the_channel_hears_why(room) -> None:  # type: ignore[no-untyped-def]
    channel, talker, listener, talker_sock, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    granted = await press(seat, channel)
    tx_id = granted.reply.tx_id  # type: ignore[union-attr]
    # The lease's keeper is made with the start, after the grant (not in the grant's way).
    assert granted.talk is not None and granted.talk.keeper is None
    await granted.talk.opened
    keeper = seat.talk.keeper  # type: ignore[union-attr]

    wrong = await floor.release(seat, tx_id=tx_id + 1)
    assert wrong.result == "no_floor" and wrong.refusal is not None
    assert wrong.refusal.code == "no_floor" and seat.talk is not None

    outcome = await floor.release(seat, tx_id=tx_id)
    assert outcome.result == "released" and outcome.reply is None and outcome.refusal is None
    assert outcome.duration_ms >= 0 and seat.talk is None
    assert await floor_holder(channel.pk) is None
    await until(lambda: bool(listener_sock.of_type("floor.released")))
    for sock in (talker_sock, listener_sock):  # the talker's own socket too
        await until(lambda sock=sock: bool(sock.of_type("floor.released")))
        [released] = sock.of_type("floor.released")
        assert released["tx_id"] == tx_id and released["reason"] == "released"
    await asyncio.gather(keeper, return_exceptions=True)
    assert keeper is not None and keeper.cancelled()  # no renewal left behind
    # The floor is free for someone else.
    other = floor.Seat(user_id=listener.pk)
    assert (await press(other, channel)).result == "granted"
    await floor.end(other, "released")
    assert (await floor.release(seat, tx_id=tx_id)).result == "no_floor"


async def test_a_lost_lease_ends_the_transmission_at_once(room, settings) -> None:  # type: ignore[no-untyped-def]
    settings.VOICE_FLOOR_LEASE_SECONDS = 0.3
    channel, talker, _, _, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    granted = await press(seat, channel)
    talk = seat.talk
    assert talk is not None
    await talk.opened  # the keeper is made with the start
    assert talk.keeper is not None
    await get_async_redis().delete(keys.floor_key(channel.pk))  # as after a Redis restart

    ended = await asyncio.wait_for(talk.keeper, 10)
    assert ended is not None and ended.result == "lease_lost" and seat.talk is None
    await until(lambda: bool(listener_sock.of_type("floor.released")))
    [released] = listener_sock.of_type("floor.released")
    assert released["tx_id"] == granted.reply.tx_id and released["reason"] == "released"  # type: ignore[union-attr]


async def test_the_lease_is_renewed_while_talking_and_ends_at_the_maximum_length(  # type: ignore[no-untyped-def]
    room, settings
) -> None:
    settings.VOICE_FLOOR_LEASE_SECONDS = 0.3
    settings.VOICE_MAX_TRANSMISSION_SECONDS = 1
    channel, talker, _, _, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    await press(seat, channel)
    talk = seat.talk
    assert talk is not None
    await talk.opened  # the keeper is made with the start
    assert talk.keeper is not None

    # A second is three leases long: "timeout", not "lease_lost", says it was renewed.
    ended = await asyncio.wait_for(talk.keeper, 10)
    assert ended is not None and ended.result == "timeout" and seat.talk is None
    await until(lambda: bool(listener_sock.of_type("floor.released")))
    assert listener_sock.of_type("floor.released")[0]["reason"] == "timeout"
    with pytest.raises(ServiceError) as refused:
        await floor.audio(seat, packet(talk.floor.tx_id))
    assert refused.value.code == "no_floor"


async def test_end_for_a_moderator_or_a_leaving_socket(room) -> None:  # type: ignore[no-untyped-def]
    channel, talker, _, _, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    assert await floor.end(seat, "moderated") is None  # nothing held: nothing said
    await press(seat, channel)
    outcome = await floor.end(seat, "moderated")
    assert outcome is not None and outcome.result == "moderated" and seat.talk is None
    await until(lambda: bool(listener_sock.of_type("floor.released")))
    assert listener_sock.of_type("floor.released")[0]["reason"] == "moderated"


async def test_audio_is_relayed_only_from_the_holder_of_that_transmission(room) -> None:  # type: ignore[no-untyped-def]
    channel, talker, _, talker_sock, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    with pytest.raises(ServiceError) as refused:
        await floor.audio(seat, packet(1))
    assert refused.value.code == "no_floor"
    granted = await press(seat, channel)
    tx_id = granted.reply.tx_id  # type: ignore[union-attr]
    with pytest.raises(ServiceError) as refused:
        await floor.audio(seat, b"\x07" * 20)
    assert refused.value.code == "bad_packet"
    with pytest.raises(ServiceError) as refused:
        await floor.audio(seat, packet(tx_id + 1))
    assert refused.value.code == "no_floor"

    sent = packet(tx_id)
    await floor.audio(seat, sent)
    await until(lambda: listener_sock.frames == [sent])
    assert talker_sock.frames == []
    await floor.end(seat, "released")


async def test_the_grant_waits_for_no_announcement_and_a_failed_start_ends_it(room) -> None:  # type: ignore[no-untyped-def]
    """The reply is ready before any socket is told floor.taken (the start is written to
    Redis, not waited for); if Redis then refuses the start, the transmission ends: the
    floor is freed and the channel, the talker too, hears floor.released."""
    channel, talker, _, talker_sock, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    outcome = await press(seat, channel)
    assert outcome.result == "granted" and listener_sock.texts == []
    await until(lambda: bool(listener_sock.of_type("floor.taken")))
    await floor.end(seat, "released")

    # A key of the wrong type makes one command of the start fail.
    await get_async_redis().set(keys.recent_key(channel.pk), "not a sorted set")
    failed = await press(seat, channel)
    assert failed.result == "granted"
    await until(lambda: len(talker_sock.of_type("floor.released")) == 2)
    assert seat.talk is None and await floor_holder(channel.pk) is None
    await get_async_redis().delete(keys.recent_key(channel.pk))


async def test_the_grant_is_ready_before_its_start_and_audio_waits_for_the_start(room) -> None:  # type: ignore[no-untyped-def]
    """200 presses at once queue behind each other in one process: each press's start (its
    recipients, the stored transmission, floor.taken) is built on a later turn of the event
    loop than its grant, after the grants ready with it. A packet sent before the start is
    written waits for it: the listener hears floor.taken, then the audio."""
    channel, talker, _, _, listener_sock = room
    seat = floor.Seat(user_id=talker.pk)
    conn = await get_relay().connection()
    outcome = await press(seat, channel)
    assert outcome.result == "granted" and outcome.talk is not None
    assert not outcome.talk.opened.done() and conn.unsent == []  # nothing of the start yet
    sent = packet(outcome.reply.tx_id)  # type: ignore[union-attr]
    await floor.audio(seat, sent)
    await until(lambda: listener_sock.frames == [sent])
    assert listener_sock.order == ["floor.taken", "binary"]
    await floor.end(seat, "released")

    # Ended before its start was written: nothing is started, the floor is free.
    again = await press(seat, channel)
    assert again.talk is not None
    await floor.end(seat, "released")
    await again.talk.opened
    assert await floor_holder(channel.pk) is None
    assert await get_async_redis().exists(keys.tx_key(again.reply.tx_id)) == 0  # type: ignore[union-attr]


async def test_a_press_whose_bans_read_fails_is_refused_and_frees_the_floor(
    room, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A press that must read the channel's bans (the first here, or after a change) reads
    them before its grant: never granted on bans that could not be read."""
    channel, talker, _, talker_sock, listener_sock = room

    def down(channel_ids: list[int]) -> dict[int, dict[int, int | None]]:
        raise OSError("database unreachable")

    monkeypatch.setattr(floor.selectors, "channels_bans_until", down)
    floor._bans_seen.pop(channel.pk, None)
    seat = floor.Seat(user_id=talker.pk)
    with pytest.raises(OSError, match="unreachable"):
        await press(seat, channel)
    assert seat.talk is None and await floor_holder(channel.pk) is None
    assert talker_sock.texts == [] and listener_sock.texts == []


async def test_a_failed_bans_read_reaches_the_presses_and_is_not_logged_again(
    monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    """The database is down at a channel's first press: the press gets the error (an error
    frame for its socket), and the shared read's task leaves no unretrieved exception."""

    def down(channel_ids: list[int]) -> dict[int, dict[int, int | None]]:
        raise OSError("database unreachable")

    monkeypatch.setattr(floor.selectors, "channels_bans_until", down)
    with pytest.raises(OSError, match="unreachable"):
        await floor._channel_bans(987_654)
    await until(lambda: not floor._reading, what="the read's task finished")
    gc.collect()
    assert "never retrieved" not in caplog.text
