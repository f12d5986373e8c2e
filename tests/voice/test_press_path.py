"""The press path costs the same in a channel of 2 or 2,000 (issue 16 item 4): no member is
read into Python, the database is read only when the channel's sanctions changed, and the
banned still hear nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from realtime.redis import get_async_redis
from tests.voice.helpers import (
    binaries,
    expect,
    joined,
    packet,
    redis_round_trips,
    take_floor,
)
from tests.waiting import until
from voice import floor, keys
from voice.keys import tx_recipients_key
from voice.models import ChannelSanction, SanctionKind
from voice.relay import get_relay


async def test_press_recipients_carry_no_member_list(amake_user, make_channel):
    talker, banned = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    await get_async_redis().hset(
        keys.sockets_key(channel.pk),
        mapping={
            f"sock{i}": json.dumps({"user_id": 100_000 + i, "country": ""}) for i in range(2000)
        },
    )
    press = floor.press_recipients
    got = await press(channel_id=channel.pk, talker_id=talker.pk, range_km=0)
    assert got == floor.Recipients(only=None, excluded=frozenset())
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=banned, kind=SanctionKind.BAN
    )
    got = await press(channel_id=channel.pk, talker_id=talker.pk, range_km=0)
    assert got == floor.Recipients(only=None, excluded=frozenset({banned.pk}))

    # Who may fetch it later is still everyone joined at the press, copied inside Redis.
    await get_relay().transmission_start(channel.pk, 987_654, talker.pk, None)
    listed = await get_async_redis().smembers(tx_recipients_key(987_654))
    assert len(listed) == 2000 and str(talker.pk).encode() not in listed


def test_a_press_reads_the_database_only_after_a_sanction_changed(
    transactional_db, make_user, queries
):
    from voice.services import channel_create

    talker, other = make_user(), make_user()
    channel = channel_create(creator=talker, name="press-queries")

    def press() -> floor.Recipients:
        return async_to_sync(floor.press_recipients)(
            channel_id=channel.pk, talker_id=talker.pk, range_km=0
        )

    press()
    queries.clear()  # the read runs on realtime.dbpool's threads: count every thread's
    assert press().excluded == frozenset()
    assert len(queries) == 0
    ChannelSanction.objects.create(channel=channel, user=other, kind=SanctionKind.BAN)
    queries.clear()
    assert press().excluded == frozenset({other.pk})
    assert len(queries) == 1, queries


async def test_a_listener_banned_in_the_admin_hears_nothing(amake_user, make_channel):
    talker, banned, heard = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct, cb, ch = [await joined(u, channel) for u in (talker, banned, heard)]
    first = await take_floor(ct)  # the channel's bans are now known to this process
    await ct.send_json_to({"type": "floor.release", "tx_id": first})
    await expect(ct, "floor.released")
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=banned, kind=SanctionKind.BAN
    )
    for comm in (ct, cb, ch):
        await binaries(comm, timeout=0.2)  # drain
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id))
    assert len(await binaries(ch)) == 1
    assert await binaries(cb) == []
    for comm in (ct, cb, ch):
        await comm.disconnect()


async def test_a_first_press_after_a_join_reads_nothing_from_the_database(
    amake_user, make_channel, queries
):
    """The join's admission read the user's sanctions in the channel already, and the join
    read the channel's bans (once a process, until they change): 200 members pressing at
    once do not each read theirs again, and the process's first press of the channel does
    not wait for its bans."""
    talker = await amake_user()
    channel = await make_channel(talker)
    comm = await joined(talker, channel)
    queries.clear()
    await take_floor(comm)
    await comm.disconnect()
    assert queries == []


def _database_down(monkeypatch: Any) -> None:
    def down(channel_ids: list[int]) -> dict[int, dict[int, int | None]]:
        raise OSError("database unreachable")

    monkeypatch.setattr(floor.selectors, "channels_bans_until", down)


async def test_a_press_after_a_join_is_granted_without_the_database(
    amake_user, make_channel, monkeypatch
):
    """The bans the join read hold while the channel's sanctions version does: the press
    is granted on them, with no read of its own (the database may be away meanwhile)."""
    talker, banned, heard = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(talker)
    cb = await joined(banned, channel)
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=banned, kind=SanctionKind.BAN
    )
    ct, ch = await joined(talker, channel), await joined(heard, channel)
    _database_down(monkeypatch)
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id))
    assert len(await binaries(ch)) == 1
    assert await binaries(cb) == []  # left out on the bans the join read
    for comm in (ct, cb, ch):
        await comm.disconnect()


async def test_a_join_whose_bans_read_fails_joins_and_its_press_is_refused(
    amake_user, make_channel, monkeypatch
):
    """The bans could not be read at the join: the join still succeeds, and a press reads
    them before its grant, refused (never granted on unknown bans) while they cannot be read,
    the floor left free."""
    talker = await amake_user()
    channel = await make_channel(talker)
    _database_down(monkeypatch)
    comm = await joined(talker, channel)
    await comm.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    assert (await expect(comm, "error"))["code"] == "server_error"
    assert await get_async_redis().exists(keys.floor_key(channel.pk)) == 0
    monkeypatch.undo()
    await take_floor(comm)
    await comm.disconnect()


async def test_a_sanction_changed_after_the_join_is_read_before_the_next_grant(
    amake_user, make_channel, monkeypatch
):
    """The bans the join read are stale once the channel's sanctions version moves: the
    next press reads them again before its grant, and is refused if it cannot."""
    talker = await amake_user()
    channel = await make_channel(talker)
    comm = await joined(talker, channel)
    await get_async_redis().incr(keys.channel_sanctions_version_key(channel.pk))
    _database_down(monkeypatch)
    await comm.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    assert (await expect(comm, "error"))["code"] == "server_error"
    await comm.disconnect()


async def _press_round_trips(comm: Any) -> list[bytes]:
    with redis_round_trips() as sent:
        tx_id = await take_floor(comm)
    await comm.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(comm, "floor.released")
    return sent


async def test_a_press_costs_two_round_trips_in_a_channel_of_any_size(amake_user, make_channel):
    """One Lua step (the talker's sanctions version, the take, the channel's sanctions
    version and location), then the start stored and published, both on the relay's
    connection; the socket's rate tokens were taken before (a lease at a time).
    The same in a channel of 2 as of 2,000."""
    small_talker, big_talker, listener = await amake_user(), await amake_user(), await amake_user()
    small, big = await make_channel(small_talker), await make_channel(big_talker)
    await get_async_redis().hset(
        keys.sockets_key(big.pk),
        mapping={
            f"sock{i}": json.dumps({"user_id": 200_000 + i, "country": ""}) for i in range(2000)
        },
    )
    counts = []
    for talker, channel in ((small_talker, small), (big_talker, big)):
        comm, other = await joined(talker, channel), await joined(listener, channel)
        await _press_round_trips(comm)  # the channel's bans are now known to this process
        # Rate leases grow 1, 2, 4, 8 (LeasedTokens): the join took 1, that press 2 (its
        # release used the second), this ping takes 4, so the press below has tokens in hand.
        await comm.send_json_to({"type": "ping"})
        await expect(comm, "pong")
        sent = await _press_round_trips(comm)
        assert len(sent) == 2, sent
        assert b"EVALSHA" in sent[0] and b"PUBLISH" in sent[1]
        # All on the relay's own connection: none pays redis-py's cost per command.
        assert all(s.startswith(b"relay ") for s in sent), sent
        counts.append(len(sent))
        await expect(other, "floor.taken")
        for c in (comm, other):
            await c.disconnect()
    assert counts == [2, 2]


def test_first_presses_of_many_channels_at_once_read_their_bans_together(
    transactional_db, make_user, queries
):
    """A process that just started meets many channels' first presses at once: one database
    read for all of them, not one each (and each still gets its own channel's bans)."""
    from voice.services import channel_create

    creator, banned = make_user(), make_user()
    channels = [channel_create(creator=creator, name=f"first-press-{i}") for i in range(20)]
    ChannelSanction.objects.create(channel=channels[3], user=banned, kind=SanctionKind.BAN)

    async def presses() -> list[floor.Recipients]:
        return await asyncio.gather(
            *(
                floor.recipients(
                    channel_id=c.pk,
                    talker_id=creator.pk,
                    range_km=0,
                    channel_version="v:first-press",
                    located=False,
                )
                for c in channels
            )
        )

    queries.clear()
    got = async_to_sync(presses)()
    assert len(queries) == 1, queries
    assert [r.excluded for r in got] == [
        frozenset({banned.pk}) if i == 3 else frozenset() for i in range(20)
    ]


def test_a_crowd_joining_a_channel_reads_its_bans_once(transactional_db, make_user, queries):
    """Joins of a channel at the same sanctions version share one read of its bans (a
    reconnect storm's crowd costs the database one statement, not one each); a join that
    read another version reads them again."""
    from voice.services import channel_create

    creator, banned = make_user(), make_user()
    channel = channel_create(creator=creator, name="crowd-join")
    ChannelSanction.objects.create(channel=channel, user=banned, kind=SanctionKind.BAN)

    async def crowd(version: bytes) -> None:
        first = asyncio.ensure_future(floor.bans_prepare(channel.pk, version))
        tag = floor.version_tag(version)
        # The others come while the first one's read is under way (or once it is known).
        await until(
            lambda: floor._reading or floor._bans_seen.get(channel.pk, ("",))[0] == tag,
            what="the first read under way or done",
        )
        await asyncio.gather(first, *(floor.bans_prepare(channel.pk, version) for _ in range(19)))

    queries.clear()
    async_to_sync(crowd)(b"7")
    assert len(queries) == 1, queries
    known = floor.recipients_known(
        channel_id=channel.pk,
        talker_id=creator.pk,
        range_km=0,
        channel_version="v:7",
        located=False,
    )
    assert known == floor.Recipients(only=None, excluded=frozenset({banned.pk}))
    async_to_sync(crowd)(b"7")  # known at this version: nothing read
    assert len(queries) == 1, queries
    async_to_sync(crowd)(b"8")
    assert len(queries) == 2, queries


async def test_a_press_right_after_the_join_takes_its_rate_tokens_in_its_take(
    amake_user, make_channel
):
    """The press is a socket's second frame and the join's lease was one token: the press's
    lease (two: LeasedTokens' slow start) is taken in the same Lua step as the floor, not in
    a round trip of its own before it."""
    from django.conf import settings

    from realtime.keys import rate_key

    talker = await amake_user()
    channel = await make_channel(talker)
    comm = await joined(talker, channel)
    await _press_round_trips(comm)  # the channel's bans are now known to this process
    await comm.disconnect()
    comm = await joined(talker, channel)  # a new socket: no tokens in hand
    bucket = rate_key("voice", talker.pk)
    before = float(await get_async_redis().hget(bucket, "t"))
    # The first socket's leave still announces itself through the channel layer (redis-py).
    sent = [s for s in await _press_round_trips(comm) if s.startswith(b"relay ")]
    assert len(sent) == 2, sent
    assert b"EVALSHA" in sent[0] and bucket.encode() in sent[0] and b"PUBLISH" in sent[1]
    left = float(await get_async_redis().hget(bucket, "t"))
    # Two taken by the press (its release spent the second), a refill meanwhile at most.
    assert before - 2 <= left < before - 2 + settings.WS_RATE_REFILL_PER_SECOND
    await comm.disconnect()


async def test_a_press_over_the_rate_limit_is_refused_and_takes_no_floor(
    amake_user, make_channel, monkeypatch
):
    """A press whose user's bucket is empty gets rate_limited, and the floor stays free."""
    from realtime.consumers import BaseConsumer
    from realtime.keys import rate_key

    talker = await amake_user()
    channel = await make_channel(talker)
    comm = await joined(talker, channel)
    monkeypatch.setattr(BaseConsumer, "rate_per_second", 0.001)  # no refill meanwhile
    now = float((await get_async_redis().time())[0])
    await get_async_redis().hset(rate_key("voice", talker.pk), mapping={"t": 0.5, "ts": now})
    await comm.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    msg = await expect(comm, "error")
    assert msg["code"] == "rate_limited", msg
    assert await get_async_redis().exists(keys.floor_key(channel.pk)) == 0
    await comm.disconnect()
