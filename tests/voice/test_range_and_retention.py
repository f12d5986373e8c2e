"""Range narrowed by coarse location, replay of a missed transmission, and the retention
promises (audio only in Redis for seconds, location only while connected) on the real
Redis and database."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from realtime.redis import get_async_redis
from tests.voice.helpers import (
    MARKER,
    assert_alive,
    binaries,
    connect,
    expect,
    expect_error,
    frames,
    join,
    joined,
    packet,
    take_floor,
)
from tests.waiting import until
from voice.keys import geo_key, location_key, sockets_key
from voice.selectors import live_members

pytestmark = pytest.mark.django_db(transaction=True)

BERLIN = (52.5200, 13.4050)
POTSDAM = (52.3906, 13.0645)  # ~27 km from Berlin
BERLIN_EAST = (52.5100, 13.4500)  # ~3 km
PARIS = (48.8566, 2.3522)  # ~880 km


async def gone(r: Any, keys: list[bytes]) -> bool:
    return not keys or await r.exists(*keys) == 0


async def locate(comm, where) -> None:  # type: ignore[no-untyped-def]
    await comm.send_json_to({"type": "location.set", "lat": where[0], "lon": where[1]})
    ok = await expect(comm, "location.ok")
    assert ok["has_location"] is True


async def test_range_narrows_who_hears(amake_user, make_channel):
    talker, near, far, nowhere = [await amake_user() for _ in range(4)]
    channel = await make_channel(talker, range_km=25)
    ct, cn, cf, cx = [await joined(u, channel) for u in (talker, near, far, nowhere)]
    await locate(ct, BERLIN)
    await locate(cn, BERLIN_EAST)
    await locate(cf, PARIS)
    # `nowhere` shares no location: hears channel-wide.
    for comm in (ct, cn, cf, cx):
        await frames(comm)

    tx_id = await take_floor(ct)
    sent = [packet(tx_id, 0), packet(tx_id, 1, last=True)]
    for p in sent:
        await ct.send_to(bytes_data=p)
    assert await binaries(cn) == sent
    assert await binaries(cx) == sent
    assert await binaries(cf) == []  # out of range: nothing

    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(ct, "floor.released")
    # The far member clears their location: now they hear channel-wide.
    await cf.send_json_to({"type": "location.clear"})
    assert (await expect(cf, "location.ok"))["has_location"] is False
    tx2 = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx2, 0))
    assert len(await binaries(cf)) == 1
    for comm in (ct, cn, cf, cx):
        await comm.disconnect()


async def test_talker_without_location_reaches_everyone(amake_user, make_channel):
    talker, far = await amake_user(), await amake_user()
    channel = await make_channel(talker, range_km=25)
    ct, cf = await joined(talker, channel), await joined(far, channel)
    await locate(cf, PARIS)
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id))
    assert len(await binaries(cf)) == 1
    await ct.disconnect()
    await cf.disconnect()


async def test_unlimited_channel_ignores_distance(amake_user, make_channel):
    talker, far = await amake_user(), await amake_user()
    channel = await make_channel(talker, range_km=0)
    ct, cf = await joined(talker, channel), await joined(far, channel)
    await locate(ct, BERLIN)
    await locate(cf, PARIS)
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id))
    assert len(await binaries(cf)) == 1
    await ct.disconnect()
    await cf.disconnect()


async def test_location_is_coarse_redis_only_and_gone_after_disconnect(amake_user, make_channel):
    user = await amake_user()
    comm = await connect(user)
    await locate(comm, (52.523456, 13.411111))
    r = get_async_redis()
    ((lon, lat),) = await r.geopos(geo_key(), str(user.pk))
    assert abs(lat - 52.52) < 1e-4 and abs(lon - 13.41) < 1e-4  # rounded to 0.01°
    ttl = await r.ttl(location_key(user.pk))
    assert 0 < ttl <= settings.VOICE_LOCATION_TTL_SECONDS
    await comm.disconnect()
    assert await r.geopos(geo_key(), str(user.pk)) == [None]
    assert not await r.exists(location_key(user.pk))

    # And after location.clear on a live socket (another user: a new place within the
    # minute would be a second move, refused).
    user = await amake_user()
    comm = await connect(user)
    await locate(comm, BERLIN)
    await comm.send_json_to({"type": "location.clear"})
    await expect(comm, "location.ok")
    assert await r.geopos(geo_key(), str(user.pk)) == [None]
    assert not await r.exists(location_key(user.pk))
    await comm.disconnect()

    @sync_to_async
    def sql_has(text: str) -> bool:
        return _sql_contains([text.encode()])

    assert not await sql_has("52.52")


# --- replay
async def _missed_transmission(amake_user, make_channel):  # type: ignore[no-untyped-def]
    """Talker T sends while listener L (in range) is away; returns what was sent."""
    talker, listener, far = [await amake_user() for _ in range(3)]
    channel = await make_channel(talker, range_km=25)
    ct, cl, cf = [await joined(u, channel) for u in (talker, listener, far)]
    await locate(ct, BERLIN)
    await locate(cl, BERLIN_EAST)
    await locate(cf, PARIS)
    tx_id = await take_floor(ct)
    await cl.disconnect()  # the listener's connection drops mid-transmission
    sent = [packet(tx_id, i, last=i == 2) for i in range(3)]
    for p in sent:
        await ct.send_to(bytes_data=p)
    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(ct, "floor.released")
    return channel, (talker, listener, far), (ct, cf), tx_id, sent


async def test_reconnecting_listener_downloads_the_missed_transmission(amake_user, make_channel):
    channel, (talker, listener, _), (ct, cf), tx_id, sent = await _missed_transmission(
        amake_user, make_channel
    )
    cl = await connect(listener)
    snapshot = await join(cl, channel)
    (recent,) = snapshot["recent"]
    assert recent["tx_id"] == tx_id and recent["user_id"] == talker.pk
    await cl.send_json_to({"type": "tx.fetch", "tx_id": tx_id})
    start = await expect(cl, "tx.replay")
    assert start["tx_id"] == tx_id and start["user_id"] == talker.pk
    assert start["nickname"] == talker.profile.nickname and start["mode"] == "webcodecs"
    got = await frames(cl)
    assert got[:-1] == sent
    assert got[-1]["type"] == "tx.replay.end"
    for comm in (ct, cf, cl):
        await comm.disconnect()


async def test_replay_refused_to_out_of_range_member_and_non_member(amake_user, make_channel):
    _, _, (ct, cf), tx_id, _ = await _missed_transmission(amake_user, make_channel)
    await cf.send_json_to({"type": "tx.fetch", "tx_id": tx_id})
    await expect_error(cf, "forbidden")
    assert await binaries(cf) == []
    await assert_alive(cf)

    stranger = await amake_user()
    other = await make_channel(stranger)
    cs = await joined(stranger, other)
    await cs.send_json_to({"type": "tx.fetch", "tx_id": tx_id})
    await expect_error(cs, "forbidden")
    assert await binaries(cs) == []
    await assert_alive(cs)
    for comm in (ct, cf, cs):
        await comm.disconnect()


async def test_member_who_joined_after_the_transmission_cannot_fetch_it(amake_user, make_channel):
    talker, late = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct = await joined(talker, channel)
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id))
    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    cl = await joined(late, channel)
    await cl.send_json_to({"type": "tx.fetch", "tx_id": tx_id})
    await expect_error(cl, "forbidden")
    await ct.disconnect()
    await cl.disconnect()


# --- retention
def _sql_contains(needles: list[bytes]) -> bool:
    """Whether any value in any table of the database holds one of `needles` (raw, or as
    text: hex or base64, the ways bytes usually end up in a text column)."""
    forms: list[bytes] = []
    for n in needles:
        forms += [n, n.hex().encode(), base64.b64encode(n)]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if value is None:
                        continue
                    raw = (
                        bytes(value)
                        if isinstance(value, bytes | memoryview)
                        else str(value).encode()
                    )
                    if any(f in raw for f in forms):
                        return True
    return False


def _disk_contains(needle: bytes) -> list[str]:
    """Files under the media root and the SQLite database files holding `needle`."""
    roots = [Path(settings.MEDIA_ROOT)]
    db_name = str(connection.settings_dict["NAME"])
    hits = []
    candidates = [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]
    candidates += [Path(db_name + s) for s in ("", "-wal") if Path(db_name + s).is_file()]
    for path in candidates:
        if needle in path.read_bytes():
            hits.append(str(path))
    return hits


async def test_audio_never_in_sql_or_on_disk_and_gone_from_redis_within_ttl(
    amake_user, make_channel, settings
):
    settings.VOICE_AUDIO_TTL_SECONDS = 2
    talker, listener = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct, cl = await joined(talker, channel), await joined(listener, channel)
    tx_id = await take_floor(ct)
    payload = MARKER + b"-retention"
    sent = packet(tx_id, 0, payload=payload)
    await ct.send_to(bytes_data=sent)
    assert await binaries(cl) == [sent]
    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(ct, "floor.released")

    r = get_async_redis()
    audio_keys = [k async for k in r.scan_iter(match=settings.REDIS_KEY_PREFIX + "voice:*")]
    assert audio_keys, "the audio is held in Redis for replay"
    for k in audio_keys:
        ttl = await r.pttl(k)
        if b":held:" in k:  # a byte count per channel (the held-audio cap), no audio in it
            assert (await r.type(k)) == b"string" and int(await r.get(k)) == len(sent)
            continue
        # Besides audio: the id counter, who is joined, and which process holds what.
        assert 0 < ttl <= 2000 or k.endswith(b"txseq") or b":sockets:" in k or b":proc:" in k, (
            k,
            ttl,
        )

    @sync_to_async
    def stored_anywhere() -> tuple[bool, list[str]]:
        return _sql_contains([payload, sent]), _disk_contains(payload)

    assert await stored_anywhere() == (False, [])

    # 2.3 s pass: every key due to expire by then expires, as Redis would expire it.
    due = [k async for k in r.scan_iter(match=settings.REDIS_KEY_PREFIX + "*")]
    due = [k for k in due if 0 < await r.pttl(k) <= 2300]
    for k in due:
        await r.pexpire(k, 1)
    await until(lambda: gone(r, due), what="the keys due by then expired")
    leftovers = []
    async for k in r.scan_iter(match=settings.REDIS_KEY_PREFIX + "voice:*"):
        if k.endswith(b"txseq") or b":sockets:" in k or b":held:" in k or b":proc:" in k:
            continue  # counters, who is connected now, and where: no audio, no location
        leftovers.append(k)
    assert leftovers == []
    # Nothing anywhere in Redis still holds the audio.
    async for k in r.scan_iter(match=settings.REDIS_KEY_PREFIX + "*"):
        if await r.type(k) == b"string":
            assert payload not in (await r.get(k) or b""), k
    await cl.send_json_to({"type": "tx.fetch", "tx_id": tx_id})
    await expect_error(cl, "not_found")
    await ct.disconnect()
    await cl.disconnect()


async def test_a_dead_process_socket_is_neither_member_nor_listener(amake_user, make_channel):
    """A socket whose server process died left its entry behind; its presence has expired."""
    a, ghost = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca = await joined(a, channel)
    await get_async_redis().hset(
        sockets_key(channel.pk),
        "specific..dead!socket",
        json.dumps({"user_id": ghost.pk, "country": ""}),
    )
    assert set(await live_members(channel.pk)) == {a.pk}
    # A selector never writes: the entry goes when a survivor cleans up after the dead
    # process (tests/realtime/test_fault_drills.py).
    assert await get_async_redis().hexists(sockets_key(channel.pk), "specific..dead!socket")
    cb = await joined(await amake_user(), channel)
    assert ghost.pk not in {m["user_id"] for m in cb.joined["members"]}
    await ca.disconnect()
    await cb.disconnect()


async def test_out_of_range_members_learn_no_talker_and_get_nothing_to_fetch(
    amake_user, make_channel
):
    talker, near, far = [await amake_user() for _ in range(3)]
    channel = await make_channel(talker, range_km=25)
    ct, cn, cf = [await joined(u, channel) for u in (talker, near, far)]
    await locate(ct, BERLIN)
    await locate(cn, BERLIN_EAST)
    await locate(cf, PARIS)
    for comm in (ct, cn, cf):
        await frames(comm)

    tx_id = await take_floor(ct)
    taken_near, taken_far = await expect(cn, "floor.taken"), await expect(cf, "floor.taken")
    assert (taken_near["user_id"], taken_near["in_range"]) == (talker.pk, True)
    assert taken_far["in_range"] is False
    assert taken_far["user_id"] is None and taken_far["nickname"] == ""
    # Pressing meanwhile: busy, without the name.
    await cf.send_json_to({"type": "floor.request", "mode": "webcodecs"})
    busy = await expect_error(cf, "busy")
    assert "out of your range" in busy["detail"]
    # A member out of range joining now (another tab) sees an anonymous talker.
    cf2 = await joined(far, channel)
    assert cf2.joined["talker"] == {
        "user_id": None,
        "nickname": "",
        "tx_id": tx_id,
        "in_range": False,
    }
    await ct.send_to(bytes_data=packet(tx_id, 0, last=True))
    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    released_far = await expect(cf, "floor.released")
    assert released_far["user_id"] is None and released_far["in_range"] is False
    assert (await expect(cn, "floor.released"))["user_id"] == talker.pk
    assert await binaries(cf) == []

    # Joining again later: the held transmission is offered to the near member only.
    cn2, cf3 = await joined(near, channel), await joined(far, channel)
    assert [r["tx_id"] for r in cn2.joined["recent"]] == [tx_id]
    assert cf3.joined["recent"] == []
    for comm in (ct, cn, cf, cf2, cn2, cf3):
        await comm.disconnect()


async def test_late_joiners_are_not_offered_what_they_may_not_fetch(amake_user, make_channel):
    talker, early, late = [await amake_user() for _ in range(3)]
    channel = await make_channel(talker)
    ct, ce = await joined(talker, channel), await joined(early, channel)
    tx_id = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx_id, 0, last=True))
    await ct.send_json_to({"type": "floor.release", "tx_id": tx_id})
    await expect(ce, "floor.released")
    cl = await joined(late, channel)
    assert cl.joined["recent"] == []  # not a listener then: fetch would be refused
    ce2 = await joined(early, channel)
    assert [r["tx_id"] for r in ce2.joined["recent"]] == [tx_id]
    for comm in (ct, ce, cl, ce2):
        await comm.disconnect()


# --- location kept only while it is refreshed, and never after its process is gone
class Clock:
    """Moves voice.services' clock forward (the location deadlines it writes and prunes by)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import time

        from voice import services

        self.ahead = 0.0
        monkeypatch.setattr(
            services,
            "time",
            SimpleNamespace(time=lambda: time.time() + self.ahead, monotonic=time.monotonic),
        )

    def move(self, seconds: float) -> None:
        self.ahead += seconds


async def _stored(user) -> bool:  # type: ignore[no-untyped-def]
    r = get_async_redis()
    located = await r.exists(location_key(user.pk))
    return (await r.geopos(geo_key(), str(user.pk)))[0] is not None or bool(located)


async def r_geopos(user):  # type: ignore[no-untyped-def]
    return await get_async_redis().geopos(geo_key(), str(user.pk))


async def test_coordinates_of_a_client_that_stops_refreshing_are_removed(
    amake_user, settings, monkeypatch
):
    settings.VOICE_LOCATION_TTL_SECONDS = 5
    clock = Clock(monkeypatch)
    quiet, busy = await amake_user(), await amake_user()
    cq, cb = await connect(quiet), await connect(busy)
    await locate(cq, BERLIN)
    await locate(cb, PARIS)
    clock.move(3)
    await locate(cb, PARIS)  # `busy` refreshes; `quiet` is still connected but sends nothing
    clock.move(3)  # 6 s: `quiet`'s 5 s ran out, `busy`'s runs until 8 s
    await locate(cb, PARIS)
    assert not await _stored(quiet)
    assert await _stored(busy)
    await cq.disconnect()
    await cb.disconnect()


async def test_the_beat_removes_expired_coordinates_when_nobody_moves(
    amake_user, make_channel, settings, monkeypatch
):
    from config.celery_app import app
    from voice.tasks import location_expire

    assert "voice.tasks.location_expire" in {e["task"] for e in app.conf.beat_schedule.values()}
    settings.VOICE_LOCATION_TTL_SECONDS = 5
    clock = Clock(monkeypatch)
    quiet, watcher = await amake_user(), await amake_user()
    channel = await make_channel(watcher)
    cw, cq = await joined(watcher, channel), await joined(quiet, channel, client=("8.8.8.8", 1))
    await locate(cq, BERLIN)
    assert (await expect(cw, "member.updated"))["member"]["country"] == "US"
    clock.move(4)
    assert (await sync_to_async(location_expire.delay)()).get() == 0  # not yet
    assert await _stored(quiet)
    clock.move(2)
    assert (await sync_to_async(location_expire.delay)()).get() == 1  # eager, as the beat would
    assert not await _stored(quiet)
    # What others see follows: the country goes with the location.
    hidden = (await expect(cw, "member.updated"))["member"]
    assert (hidden["user_id"], hidden["country"]) == (quiet.pk, "")
    assert await sync_to_async(location_expire)() == 0  # idempotent
    await cq.disconnect()
    await cw.disconnect()


async def test_a_dead_process_sockets_locations_are_removed_by_the_release(amake_user):
    """A process killed with SIGKILL runs no disconnect: the survivor's release clears the
    locations its sockets shared (and only theirs)."""
    from realtime import liveness
    from voice import services
    from voice.keys import process_located_key

    dead, elsewhere = await amake_user(), await amake_user()
    cd = await connect(dead)
    await locate(cd, BERLIN)
    pid = liveness.process_id()  # the test's process stands in for the one that died
    # A user whose socket is on another, live process.
    await services.location_set(user_id=elsewhere.pk, lat=PARIS[0], lon=PARIS[1])
    await services.process_dead_release(pid, {})
    assert not await _stored(dead)
    assert await _stored(elsewhere)
    assert not await get_async_redis().exists(process_located_key(pid))
    await cd.disconnect()
    await services.location_clear(user_id=elsewhere.pk)


# --- the range cannot be used to place someone
async def test_rapid_relocation_is_refused_and_the_stored_place_kept(amake_user):
    user = await amake_user()
    comm = await connect(user)
    await locate(comm, BERLIN)
    before = await r_geopos(user)
    await locate(comm, (52.5210, 13.4060))  # about the same place: a refresh always passes
    await comm.send_json_to({"type": "location.set", "lat": PARIS[0], "lon": PARIS[1]})
    err = await expect_error(comm, "location_too_frequent")
    assert "once a minute" in err["detail"]
    assert await r_geopos(user) == before
    # Clearing and setting again is a move too: no way around the limit.
    await comm.send_json_to({"type": "location.clear"})
    await expect(comm, "location.ok")
    await comm.send_json_to({"type": "location.set", "lat": PARIS[0], "lon": PARIS[1]})
    await expect_error(comm, "location_too_frequent")
    assert not await _stored(user)
    await assert_alive(comm)
    await comm.disconnect()
