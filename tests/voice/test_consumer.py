"""The CBLINE socket on the real ASGI app (origin check, session auth), real Redis and the
real relay: channels, the floor, audio fan-out, bad input, moderation, identity."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from tests.conftest import acommunicator
from tests.voice.helpers import (
    assert_alive,
    binaries,
    connect,
    expect,
    expect_each,
    expect_error,
    frames,
    join,
    joined,
    packet,
    take_floor,
)
from voice import floor
from voice.models import ChannelSanction, SanctionKind

pytestmark = pytest.mark.django_db(transaction=True)


async def test_anonymous_socket_is_closed_with_4401():
    comm = await acommunicator("/ws/cbline/")
    await comm.connect()
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_join_shows_members_with_country_and_never_coordinates(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a, description="road trip", range_km=25)
    ca = await joined(a, channel)
    await ca.send_json_to({"type": "location.set", "lat": 52.520008, "lon": 13.404954})
    ok = await expect(ca, "location.ok")
    assert ok["has_location"] is True

    cb = await joined(b, channel, client=("8.8.8.8", 5000))
    snapshot = cb.joined
    assert snapshot["channel"] == {
        "id": channel.pk,
        "name": channel.name,
        "description": "road trip",
        "range_km": 25,
        "is_protected": False,
    }
    assert snapshot["me"] == {
        "user_id": b.pk,
        "has_location": False,
        "range_km": 25,
        "is_moderator": False,
    }
    by_id = {m["user_id"]: m for m in snapshot["members"]}
    assert set(by_id) == {a.pk, b.pk}
    # A shares a location; A's connection has no country (loopback): their profile's
    # country stands in.
    assert by_id[a.pk]["country"] == "DE" and by_id[a.pk]["flag"] == "🇩🇪"
    assert by_id[a.pk]["is_moderator"] is True
    # B shares no location: no country at all, neither the address's nor the profile's.
    assert (by_id[b.pk]["country"], by_id[b.pk]["country_name"], by_id[b.pk]["flag"]) == (
        "",
        "",
        "",
    )

    joined_event = await expect(ca, "member.joined")
    assert joined_event["member"]["user_id"] == b.pk
    text = json.dumps([snapshot, joined_event])
    assert "52.52" not in text and "13.40" not in text and "lat" not in text

    await cb.disconnect()
    assert (await expect(ca, "member.left"))["user_id"] == b.pk
    await ca.disconnect()


async def test_country_shown_only_while_the_member_shares_location(amake_user, make_channel):
    """The policy: others see a member's country only if that member shared a location."""
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca = await joined(a, channel)
    cb = await joined(b, channel, client=("8.8.8.8", 5000))
    assert (await expect(ca, "member.joined"))["member"]["country"] == ""
    assert {m["user_id"]: m["country"] for m in cb.joined["members"]} == {a.pk: "", b.pk: ""}

    await cb.send_json_to({"type": "location.set", "lat": 40.7128, "lon": -74.0060})
    ok = await expect(cb, "location.ok")
    assert (ok["has_location"], ok["country"]) == (True, "US")
    shown = (await expect(ca, "member.updated"))["member"]
    assert (shown["user_id"], shown["country"], shown["country_name"]) == (
        b.pk,
        "US",
        "United States",
    )
    # A refresh at the same place changes nothing others see: no event.
    await cb.send_json_to({"type": "location.set", "lat": 40.7128, "lon": -74.0060})
    await expect(cb, "location.ok")
    assert [f for f in await frames(ca) if f.get("type") == "member.updated"] == []
    # A later joiner sees the country while B shares.
    cc = await joined(await amake_user(), channel)
    assert {m["user_id"]: m["country"] for m in cc.joined["members"]}[b.pk] == "US"

    await cb.send_json_to({"type": "location.clear"})
    ok = await expect(cb, "location.ok")
    assert (ok["has_location"], ok["country"]) == (False, "")
    for comm in (ca, cc):
        hidden = (await expect(comm, "member.updated"))["member"]
        assert (hidden["user_id"], hidden["country"], hidden["flag"]) == (b.pk, "", "")
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_talk_reaches_listener_and_floor_events(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)

    tx_id = await take_floor(ca)
    taken = await expect(cb, "floor.taken")
    assert taken["tx_id"] == tx_id and taken["user_id"] == a.pk and taken["mode"] == "webcodecs"
    sent = [packet(tx_id, 0), packet(tx_id, 1, last=True)]
    for p in sent:
        await ca.send_to(bytes_data=p)
    assert await binaries(cb) == sent  # the same bytes, in order
    await ca.send_json_to({"type": "floor.release", "tx_id": tx_id})
    for comm in (ca, cb):
        released = await expect(comm, "floor.released")
        assert released["tx_id"] == tx_id and released["reason"] == "released"
    assert not [f for f in await frames(ca) if isinstance(f, bytes)]  # talker hears no echo

    # A listener joining again (another tab) is offered the finished transmission; a
    # newcomer, who was no listener and would be refused it, is not.
    cb2 = await joined(b, channel)
    assert [r["tx_id"] for r in cb2.joined["recent"]] == [tx_id]
    c = await amake_user()
    cc = await joined(c, channel)
    assert cc.joined["recent"] == []
    await cb2.disconnect()
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_busy_while_someone_talks_then_free(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)
    tx_id = await take_floor(ca)
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    busy = await expect_error(cb, "busy")
    assert a.profile.nickname in busy["detail"]
    await ca.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(cb, "floor.released")
    assert await take_floor(cb) > tx_id
    await ca.disconnect()
    await cb.disconnect()


async def test_joining_during_a_transmission_shows_the_talker(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca = await joined(a, channel)
    tx_id = await take_floor(ca)
    cb = await joined(b, channel)
    assert cb.joined["talker"] == {
        "user_id": a.pk,
        "nickname": a.profile.nickname,
        "tx_id": tx_id,
        "in_range": True,
    }
    await ca.disconnect()
    released = await expect(cb, "floor.released")
    assert released["reason"] == "disconnected"
    await cb.disconnect()


async def test_floor_released_at_maximum_length(amake_user, make_channel, settings):
    settings.VOICE_MAX_TRANSMISSION_SECONDS = 1
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)
    tx_id = await take_floor(ca)
    released = await expect(cb, "floor.released", timeout=4)
    assert released["reason"] == "timeout" and released["tx_id"] == tx_id
    assert 900 <= released["duration_ms"] < 3000
    # Packets after the end are refused and reach no one.
    await ca.send_to(bytes_data=packet(tx_id, 99))
    await expect_error(ca, "no_floor")
    assert await binaries(cb) == []
    assert await take_floor(cb)
    await ca.disconnect()
    await cb.disconnect()


# --- bad input: an error frame, the connection stays, nothing reaches anyone else
async def _talking_pair(amake_user, make_channel):  # type: ignore[no-untyped-def]
    a, b, c = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb, cc = await joined(a, channel), await joined(b, channel), await joined(c, channel)
    tx_id = await take_floor(ca)
    await expect(cb, "floor.taken")
    await expect(cc, "floor.taken")
    await frames(ca)
    await frames(cb)
    await frames(cc)
    return channel, (a, b, c), (ca, cb, cc), tx_id


async def test_oversize_packet_is_refused(amake_user, make_channel):
    _, _, (ca, cb, cc), tx_id = await _talking_pair(amake_user, make_channel)
    big = packet(tx_id, 0, payload=b"x" * settings.WS_MAX_BINARY_FRAME_BYTES)
    await ca.send_to(bytes_data=big)
    await expect_error(ca, "too_large")
    assert await frames(cb) == [] and await frames(cc) == []
    await assert_alive(ca)
    await ca.send_to(bytes_data=packet(tx_id, 1))  # the transmission goes on
    assert len(await binaries(cb)) == 1
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_packet_without_the_floor_is_refused(amake_user, make_channel):
    _, _, (ca, cb, cc), tx_id = await _talking_pair(amake_user, make_channel)
    # B forges A's transmission id; then tries a transmission of its own.
    for forged in (packet(tx_id, 0), packet(tx_id + 1, 0)):
        await cb.send_to(bytes_data=forged)
        await expect_error(cb, "no_floor")
    assert await frames(ca) == [] and await frames(cc) == []
    await assert_alive(cb)
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_packet_for_a_channel_not_joined_is_refused(amake_user, make_channel):
    _, _, (ca, cb, cc), tx_id = await _talking_pair(amake_user, make_channel)
    outsider = await connect(await amake_user())
    await outsider.send_to(bytes_data=packet(tx_id, 0))
    await expect_error(outsider, "not_in_channel")
    # A leaves the channel it talks in: its packets are no longer for any channel it is in.
    await ca.send_json_to({"type": "channel.leave"})
    await expect(ca, "channel.left")
    await ca.send_to(bytes_data=packet(tx_id, 1))
    await expect_error(ca, "not_in_channel")
    assert await binaries(cb) == [] and await binaries(cc) == []
    await assert_alive(outsider)
    await assert_alive(ca)
    for comm in (ca, cb, cc, outsider):
        await comm.disconnect()


@pytest.mark.parametrize(
    "bad",
    [
        b"\x01\x00",  # shorter than a header
        packet(1, 0)[:16],  # a header without payload
        b"\x07" + packet(1, 0)[1:],  # unknown kind
        packet(1, 0)[:1] + b"\x04" + packet(1, 0)[2:],  # undefined flag bit
        packet(1, 0)[:16] + b"\xff\xff" + b"short",  # Opus frame length past the end
    ],
)
async def test_malformed_packet_is_refused(amake_user, make_channel, bad):
    _, _, (ca, cb, cc), _ = await _talking_pair(amake_user, make_channel)
    await ca.send_to(bytes_data=bad)
    await expect_error(ca, "bad_packet")
    assert await frames(cb) == [] and await frames(cc) == []
    await assert_alive(ca)
    for comm in (ca, cb, cc):
        await comm.disconnect()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "channel.join", "channel_id": "one"}, "invalid"),
        ({"type": "channel.join", "channel_id": 1, "password": 7}, "invalid"),
        ({"type": "floor.request", "mode": "carrier-pigeon"}, "invalid"),
        ({"type": "floor.request"}, "invalid"),
        ({"type": "floor.release"}, "invalid"),
        ({"type": "floor.release", "tx_id": 999_999}, "no_floor"),
        ({"type": "location.set", "lat": 200, "lon": 0}, "invalid"),
        ({"type": "location.set", "lat": "here", "lon": 0}, "invalid"),
        ({"type": "tx.fetch", "tx_id": -1}, "invalid"),
        ({"type": "mod.ban", "user_id": 1, "minutes": -5}, "invalid"),
        ({"type": "mod.kick", "user_id": 1, "extra": True}, "invalid"),
        ({"type": "floor.grab"}, "unknown_type"),
        ({"type": "tx.fetch", "tx_id": 424242}, "not_found"),
    ],
)
async def test_malformed_control_message_is_refused(amake_user, make_channel, message, code):
    _, _, (ca, cb, cc), _ = await _talking_pair(amake_user, make_channel)
    await cb.send_json_to({**message, "ref": "r1"})
    error = await expect_error(cb, code)
    assert error["ref"] == "r1"
    assert await frames(ca) == [] and await frames(cc) == []
    await assert_alive(cb)
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_not_json_is_refused(amake_user, make_channel):
    _, _, (ca, cb, cc), _ = await _talking_pair(amake_user, make_channel)
    await cb.send_to(text_data="{floor please")
    await expect_error(cb, "bad_json")
    assert await frames(ca) == [] and await frames(cc) == []
    await assert_alive(cb)
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_wrong_channel_password_is_refused(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a, password="sesame-42")
    ca = await joined(a, channel)
    cb = await connect(b)
    await cb.send_json_to({"type": "channel.join", "channel_id": channel.pk})
    await expect_error(cb, "password_required")
    await cb.send_json_to({"type": "channel.join", "channel_id": channel.pk, "password": "nope"})
    await expect_error(cb, "wrong_password")
    assert await frames(ca) == []  # no member.joined: B never got in
    await assert_alive(cb)
    # Not in the channel: cannot talk.
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "not_in_channel")
    # The right password admits; after that a reconnect needs none.
    assert (await join(cb, channel, "sesame-42"))["channel"]["is_protected"] is True
    await cb.disconnect()
    cb2 = await connect(b)
    await join(cb2, channel)
    await ca.disconnect()
    await cb2.disconnect()


async def test_unknown_channel_is_refused(amake_user):
    comm = await connect(await amake_user())
    await comm.send_json_to({"type": "channel.join", "channel_id": 987654})
    await expect_error(comm, "not_found")
    await assert_alive(comm)
    await comm.disconnect()


# --- moderation
async def test_mute_stops_talking_but_not_listening(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)
    tx_b = await take_floor(cb)
    await ca.send_json_to({"type": "mod.mute", "user_id": b.pk, "minutes": 10})
    got = await expect_each(ca, "mod.ok", "floor.released", "member.updated")
    assert got["mod.ok"] == {"type": "mod.ok", "action": "muted", "user_id": b.pk}
    moderated = await expect(cb, "moderated")
    assert moderated["action"] == "muted" and moderated["until"] > 0
    released = got["floor.released"]
    assert released["tx_id"] == tx_b and released["reason"] == "moderated"
    updated = got["member.updated"]
    assert updated["member"]["user_id"] == b.pk and updated["member"]["muted"] is True
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "muted")
    # Still hears A.
    tx_a = await take_floor(ca)
    await ca.send_to(bytes_data=packet(tx_a))
    assert len(await binaries(cb)) == 1
    await ca.send_json_to({"type": "floor.release", "tx_id": tx_a})
    await expect(cb, "floor.released")

    # A moderator lifts the mute: B is told, everyone sees it, and B may talk again.
    await ca.send_json_to({"type": "mod.unmute", "user_id": b.pk})
    assert (await expect(ca, "mod.ok"))["action"] == "unmuted"
    unmuted = await expect(cb, "moderated")
    assert unmuted == {"type": "moderated", "action": "unmuted", "until": None}
    updated = await expect(ca, "member.updated")
    assert updated["member"]["user_id"] == b.pk and updated["member"]["muted"] is False
    assert await take_floor(cb)
    await ca.disconnect()
    await cb.disconnect()


async def test_kick_and_ban(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)

    await ca.send_json_to({"type": "mod.kick", "user_id": b.pk})
    await expect(ca, "mod.ok")
    assert (await expect(cb, "moderated"))["action"] == "kicked"
    assert (await expect(cb, "channel.left"))["channel_id"] == channel.pk
    assert (await expect(ca, "member.left"))["user_id"] == b.pk
    # Out of the channel: A's audio no longer reaches B.
    tx_id = await take_floor(ca)
    await ca.send_to(bytes_data=packet(tx_id))
    assert await binaries(cb) == []
    await ca.send_json_to({"type": "floor.release", "tx_id": tx_id})

    await join(cb, channel)  # a kick is not a ban
    await ca.send_json_to({"type": "mod.ban", "user_id": b.pk, "minutes": 0})
    banned = await expect(cb, "moderated")
    assert banned == {"type": "moderated", "action": "banned", "until": None}
    await expect(cb, "channel.left")
    await cb.send_json_to({"type": "channel.join", "channel_id": channel.pk})
    await expect_error(cb, "banned")
    await assert_alive(cb)
    await ca.disconnect()
    await cb.disconnect()


async def test_only_moderators_moderate(amake_user, make_channel):
    a, b, c = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb, cc = await joined(a, channel), await joined(b, channel), await joined(c, channel)
    await frames(ca)
    await cb.send_json_to({"type": "mod.kick", "user_id": c.pk})
    await expect_error(cb, "forbidden")
    await cb.send_json_to({"type": "mod.ban", "user_id": a.pk})
    await expect_error(cb, "forbidden")
    await cb.send_json_to({"type": "mod.unmute", "user_id": c.pk})
    await expect_error(cb, "forbidden")
    await ca.send_json_to(
        {"type": "mod.unmute", "user_id": c.pk}
    )  # a moderator, but c is not muted
    await expect_error(ca, "not_muted")
    assert await frames(cc) == [] and await frames(ca) == []
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_identity_change_reaches_the_channel(amake_user, make_channel, client):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)
    await frames(ca)

    @sync_to_async
    def rename() -> None:
        client.force_login(b)
        resp = client.post(
            "/cbline/api/identity/", {"nickname": "Breaker 19", "description": "trucker"}
        )
        assert resp.status_code == 200, resp.content

    await rename()
    member = (await expect(ca, "member.updated"))["member"]
    assert member["nickname"] == "Breaker 19" and member["description"] == "trucker"
    tx_id = await take_floor(cb)
    assert (await expect(ca, "floor.taken"))["nickname"] == "Breaker 19"
    await cb.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await ca.disconnect()
    await cb.disconnect()


async def test_switching_channels_leaves_the_first(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    one, two = await make_channel(a), await make_channel(a)
    ca, cb = await joined(a, one), await joined(b, one)
    await join(cb, two)
    assert (await expect(ca, "member.left"))["user_id"] == b.pk
    tx_id = await take_floor(ca)
    await ca.send_to(bytes_data=packet(tx_id))
    assert await binaries(cb) == []
    await ca.disconnect()
    await cb.disconnect()


# The packet pace, byte and per-channel limits: tests/voice/test_abuse_limits.py.


async def test_ban_made_in_the_admin_stops_a_connected_talker(amake_user, make_channel):
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    cb = await joined(b, channel)
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=b, kind=SanctionKind.BAN
    )
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "banned")
    await cb.disconnect()


async def test_big_channel_lists_part_of_its_members_and_stops_announcing(
    amake_user, make_channel, monkeypatch
):
    monkeypatch.setattr("voice.consumers.MEMBER_LIST_LIMIT", 2)
    monkeypatch.setattr("voice.consumers.MEMBER_EVENTS_LIMIT", 2)
    creator, b, c = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(creator)
    ca, cb = await joined(creator, channel), await joined(b, channel)
    assert (await expect(ca, "member.joined"))["member"]["user_id"] == b.pk
    cc = await joined(c, channel)
    snapshot = cc.joined
    assert snapshot["member_count"] == 3
    # The joiner and the moderator (the creator) come first.
    assert {m["user_id"] for m in snapshot["members"]} == {c.pk, creator.pk}
    assert await frames(ca) == [] and await frames(cb) == []  # no member.joined past the limit
    # Audio still reaches everyone.
    tx_id = await take_floor(ca)
    await ca.send_to(bytes_data=packet(tx_id))
    assert len(await binaries(cb)) == 1 and len(await binaries(cc)) == 1
    for comm in (ca, cb, cc):
        await comm.disconnect()


async def test_sanction_changes_reach_a_socket_that_already_pressed(
    amake_user, make_channel, monkeypatch
):
    """Presses read sanctions from the socket's cache: a change made anywhere (here the ORM,
    as the admin does) must still count at the very next press, and a mute runs out on
    time with nobody touching it."""
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    cb = await joined(b, channel)
    tx = await take_floor(cb)  # primes the cache: no sanctions
    await cb.send_json_to({"type": "floor.release", "tx_id": tx})
    await expect(cb, "floor.released")

    ban = await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=b, kind=SanctionKind.BAN
    )
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "banned")
    await sync_to_async(ban.delete)()
    tx = await take_floor(cb)
    await cb.send_json_to({"type": "floor.release", "tx_id": tx})
    await expect(cb, "floor.released")

    soon = timezone.now() + dt.timedelta(seconds=60)
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=b, kind=SanctionKind.MUTE, until=soon
    )
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "muted")
    # A minute passes, by the clock presses read: the mute ends with nobody touching it.
    real_now_ms = floor.now_ms
    monkeypatch.setattr(floor, "now_ms", lambda: real_now_ms() + 60_100)
    assert await take_floor(cb)
    await cb.disconnect()


async def test_timed_ban_listed_for_moderators_and_lifted(amake_user, make_channel):
    owner, member, other = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(owner)
    co, cm, cx = [await joined(u, channel) for u in (owner, member, other)]
    await co.send_json_to({"type": "mod.ban", "user_id": member.pk, "minutes": 60})
    assert (await expect(co, "mod.ok"))["action"] == "banned"
    moderated = await expect(cm, "moderated")
    assert moderated["action"] == "banned" and moderated["until"] is not None
    await co.send_json_to({"type": "mod.bans"})
    bans = (await expect(co, "mod.bans"))["bans"]
    assert [b["user_id"] for b in bans] == [member.pk]
    assert bans[0]["until"] == moderated["until"] and bans[0]["nickname"]
    # Not a moderator: no list.
    await cx.send_json_to({"type": "mod.bans"})
    await expect_error(cx, "forbidden")
    # Lifted: the list empties and the member may join again.
    await co.send_json_to({"type": "mod.unban", "user_id": member.pk})
    assert (await expect(co, "mod.ok"))["action"] == "unbanned"
    await co.send_json_to({"type": "mod.bans"})
    assert (await expect(co, "mod.bans"))["bans"] == []
    await join(cm, channel)
    for comm in (co, cm, cx):
        await comm.disconnect()


async def test_a_users_sockets_share_one_rate_bucket_taken_a_lease_at_a_time(
    amake_user, monkeypatch
):
    """Each socket takes RATE_LEASE tokens at once (one Redis round trip per lease), yet the
    user's sockets together get through no more than the bucket holds."""
    from django.conf import settings

    from realtime.consumers import BaseConsumer
    from voice.consumers import RATE_LEASE

    user = await amake_user()
    a, b = await connect(user), await connect(user)
    monkeypatch.setattr(BaseConsumer, "rate_per_second", 0.001)  # no refill meanwhile
    pongs = 0
    for _ in range(settings.WS_RATE_CAPACITY):
        for comm in (a, b):
            await comm.send_json_to({"type": "ping"})
            pongs += (await comm.receive_json_from())["type"] == "pong"
    assert settings.WS_RATE_CAPACITY - 2 * RATE_LEASE <= pongs <= settings.WS_RATE_CAPACITY
    for comm in (a, b):
        await comm.disconnect()
