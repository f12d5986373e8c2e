"""The press path costs the same in a channel of 2 or 2,000 (issue 16 item 4): no member is
read into Python, the database is read only when the channel's sanctions changed, and the
banned still hear nothing."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync, sync_to_async

from realtime.redis import get_async_redis
from tests.voice.helpers import binaries, expect, joined, packet, take_floor
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


async def test_a_first_press_after_a_join_reads_no_sanction_of_the_talker(
    amake_user, make_channel, queries
):
    """The join's admission read the user's sanctions in the channel already: 200 members
    pressing at once do not each read theirs again (only the channel's bans, once a
    process, until they change)."""
    talker = await amake_user()
    channel = await make_channel(talker)
    comm = await joined(talker, channel)
    queries.clear()
    await take_floor(comm)
    await comm.disconnect()
    assert len(queries) <= 1, queries
