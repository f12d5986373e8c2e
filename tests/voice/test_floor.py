"""The floor's lease in Redis (voice.floor.take_lease/free_lease): one holder per channel,
a busy request learns who talks and costs no transmission id, ids wrap within a u32 and
are never 0."""

from __future__ import annotations

import pytest

from realtime.redis import get_async_redis
from tests.voice.helpers import binaries, expect, expect_error, joined, packet, take_floor
from voice import floor as floors
from voice import keys
from voice.selectors import floor_holder


async def take(channel_id: int, user_id: int):  # type: ignore[no-untyped-def]
    return await floors.take_lease(
        channel_id=channel_id, user_id=user_id, nickname=f"u{user_id}", mode="webcodecs"
    )


async def test_one_holder_and_the_busy_side_learns_who() -> None:
    floor, holder = await take(71, 1)
    assert floor is not None and holder is None
    assert await floor_holder(71) == {
        "tx_id": floor.tx_id,
        "user_id": 1,
        "nickname": "u1",
        "started_at": floor.started_at,
        "mode": "webcodecs",
    }
    seq_before = await get_async_redis().get(keys.tx_seq_key())
    busy, holder = await take(71, 2)
    assert busy is None and holder is not None and holder["user_id"] == 1
    assert await get_async_redis().get(keys.tx_seq_key()) == seq_before  # no id spent
    # Another channel is free meanwhile.
    other, _ = await take(72, 2)
    assert other is not None and other.tx_id != floor.tx_id

    await floors.free_lease(channel_id=71, floor=floor)
    again, _ = await take(71, 2)
    assert again is not None and again.tx_id not in (floor.tx_id, other.tx_id)


@pytest.mark.parametrize(
    ("counter", "expected"), [(2**32 - 2, 2**32 - 1), (2**32 - 1, 1), (2**33 - 2, 1)]
)
async def test_ids_wrap_within_a_u32_and_skip_zero(counter: int, expected: int) -> None:
    await get_async_redis().set(keys.tx_seq_key(), counter)
    floor, _ = await take(73, 1)
    assert floor is not None and floor.tx_id == expected


async def test_the_floor_is_a_short_lease_renewed_only_by_its_holder(settings) -> None:  # type: ignore[no-untyped-def]
    settings.VOICE_FLOOR_LEASE_SECONDS = 2
    floor, _ = await take(74, 1)
    assert floor is not None
    ttl = await get_async_redis().pttl(keys.floor_key(74))
    assert 1500 < ttl <= 2000
    settings.VOICE_FLOOR_LEASE_SECONDS = 9
    assert await floors.renew_lease(channel_id=74, floor=floor)
    assert 8500 < await get_async_redis().pttl(keys.floor_key(74)) <= 9000
    await floors.free_lease(channel_id=74, floor=floor)
    other, _ = await take(74, 2)
    assert other is not None
    # The old transmission can no longer extend the new holder's lease.
    assert not await floors.renew_lease(channel_id=74, floor=floor)
    assert await get_async_redis().pttl(keys.floor_key(74)) <= 9000


async def test_a_talker_keeps_the_floor_past_its_lease_while_talking(  # type: ignore[no-untyped-def]
    amake_user, make_channel, settings
):
    """The lease is short (a dead holder frees it quickly), so the talker's socket must renew
    it: a transmission several leases long is neither cut nor taken over."""
    settings.VOICE_FLOOR_LEASE_SECONDS = 0.6
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, cb = await joined(a, channel), await joined(b, channel)
    tx = await take_floor(ca)
    heard = []
    for seq in range(5):  # about 2.5 s: four leases
        await ca.send_to(bytes_data=packet(tx, seq))
        heard += await binaries(cb, timeout=0.5)
    assert len(heard) == 5
    await cb.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    await expect_error(cb, "busy")
    assert await get_async_redis().pttl(keys.floor_key(channel.pk)) > 0
    await ca.send_json_to({"type": "floor.release", "tx_id": tx})
    assert (await expect(cb, "floor.released"))["reason"] == "released"
    for comm in (ca, cb):
        await comm.disconnect()
