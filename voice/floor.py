"""The floor of a CBLINE channel: who may talk, decided here and nowhere else.

Services, in Zulip's `do_*` manner: each takes the socket's `Seat` (its part in the floor,
which only these functions change) and returns a `FloorOutcome` that the consumer only sends:
the reply to the asking socket, or the refusal it gets as an error frame. What every other
socket hears (floor.taken, floor.released) travels through the relay (voice/relay.py).

  request  -> granted | busy | banned | muted | already_talking
  release  -> released | no_floor            (the talker's floor.release)
  end      -> released | disconnected | moderated   (the socket leaves, is sanctioned)
  hold     -> timeout | lease_lost           (the transmission's own clock)
  audio    -> the packet is relayed, or a ServiceError says why not (the hot path)

The floor itself is a short lease in Redis (one Lua step, so two processes can never both
win) that the talker's socket renews while it talks (`hold`); a process that dies holding it
frees it within VOICE_FLOOR_LEASE_SECONDS, or its survivors do (`end_transmission`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings

from realtime import metrics
from realtime.batching import PerLoop
from realtime.dbpool import pooled
from realtime.errors import NotAllowed, ServiceError
from realtime.fanout import RespConnection, Script, run_script
from realtime.ratelimit import LEASE_LUA
from realtime.redis import get_async_redis
from realtime.schemas import Outbound

from . import keys, selectors
from .models import Channel, SanctionKind
from .relay import get_relay
from .schemas import FloorGranted, PacketHeader, ReleaseReason
from .selectors import floor_decode

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the lease in Redis
# Delete the floor only if it still belongs to this transmission (another may hold it now),
# and strike it from its process's list of held floors.
_RELEASE = Script.of(
    """
local mine = redis.call('HGET', KEYS[2], ARGV[2])
if mine and string.match(mine, '^(%d+)|') == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%d+)|') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
)

# Extend the lease only while this transmission still holds the floor.
_RENEW = Script.of(
    """
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%d+)|') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)


@dataclass(frozen=True)
class Floor:
    tx_id: int
    user_id: int
    nickname: str
    started_at: int
    mode: str
    process_id: str = ""  # realtime.liveness: whose survivors release it if it dies


# The press in one round trip: the talker's sanctions version must still be the one the
# socket's cached sanctions were read at (else nothing is taken: ARGV[6] '*' skips the check),
# then the floor is taken if free; the transmission id (a u32 in the packet header, never 0,
# hence the wrap) is handed out only to a granted request. The holder's process lists the
# floor (KEYS[3]) so that its survivors can release it. A grant also returns what the
# recipients need: the channel's sanctions version and, in a ranged channel (ARGV[7]),
# whether the talker shares a location. Versions travel as 'v:<value>', '-' when unset.
# With ARGV[8] not '0', the press's own rate tokens are taken first (LEASE_LUA: that lease of
# the user's bucket KEYS[7], else one; none left: {3, 0}, nothing else done); every other
# answer ends with the tokens taken.
_TAKE = Script.of(
    LEASE_LUA
    + """
local function ver(k)
  local v = redis.call('GET', k)
  if v then return 'v:' .. v end
  return '-'
end
local charged = 0
if ARGV[8] ~= '0' then
  charged = lease(KEYS[7], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[8]))
  if charged == 0 then return {3, 0} end
end
if ARGV[6] ~= '*' then
  local mine = ver(KEYS[4])
  if mine ~= ARGV[6] then return {2, mine, charged} end
end
local holder = redis.call('GET', KEYS[2])
if holder then return {0, holder, charged} end
local id = (redis.call('INCR', KEYS[1]) - 1) % 4294967295 + 1
local value = id .. '|{"tx_id": ' .. id .. ', ' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[2], value, 'PX', ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], value)
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
local located = 0
if ARGV[7] == '1' then located = redis.call('EXISTS', KEYS[6]) end
return {1, id, ver(KEYS[5]), located, charged}
"""
)
UNCHECKED = "*"  # take_lease's `sanctions_version`: no check of the talker's sanctions


def version_tag(version: bytes | None) -> str:
    """A sanctions version as _TAKE compares and returns it."""
    return "-" if version is None else "v:" + version.decode()


def _lease_ms() -> int:
    return int(settings.VOICE_FLOOR_LEASE_SECONDS * 1000)


@dataclass(frozen=True)
class Taken:
    """What the press's one step in Redis found. `floor` granted, else `holder` (busy), else
    `stale`: the talker's sanctions changed since the socket read them (nothing taken; the
    new version tag). With a grant, the channel's sanctions version tag and whether the
    talker is located (ranged channels only)."""

    floor: Floor | None = None
    holder: dict[str, Any] | None = None
    stale: str | None = None
    channel_version: str = "-"
    located: bool = False
    rate_limited: bool = False  # the press's `RateCharge` found no token: nothing else done


@dataclass
class RateCharge:
    """A press frame's rate tokens, taken in its take's own step (a round trip saved on a
    socket's first press): `size` tokens of the user's bucket `key`, else one, as
    realtime.ratelimit.LeasedTokens would have; `taken` is what the step took (0: none
    left), None while no take ran."""

    key: str
    capacity: int
    per_second: float
    size: int
    taken: int | None = None


async def take(
    *,
    channel_id: int,
    user_id: int,
    nickname: str,
    mode: str,
    process_id: str = "",
    sanctions_version: str = UNCHECKED,
    ranged: bool = False,
    rate: RateCharge | None = None,
) -> Taken:
    """Take the channel's floor atomically (one Lua step, so two processes can never both
    win) on the relay's own Redis connection, unless the talker's sanctions version is no
    longer `sanctions_version` (a tag of `version_tag`), or `rate` finds no token (it is
    charged in the same step). The floor is a short lease (`renew_lease`): a holder that
    vanishes frees it within VOICE_FLOOR_LEASE_SECONDS."""
    started_at = now_ms()
    about = {"user_id": user_id, "nickname": nickname, "started_at": started_at, "mode": mode}
    reply = await run_script(
        await get_relay().connection(),
        _TAKE,
        7,
        keys.tx_seq_key(),
        keys.floor_key(channel_id),
        keys.process_floors_key(process_id),
        keys.sanctions_version_key(user_id),
        keys.channel_sanctions_version_key(channel_id),
        keys.location_key(user_id),
        keys.tx_seq_key() if rate is None else rate.key,
        json.dumps(about),
        _lease_ms(),
        channel_id,
        process_id,
        settings.LIVENESS_SOCKETS_KEEP_SECONDS,
        sanctions_version,
        "1" if ranged else "0",
        *((0, 0, 0) if rate is None else (rate.size, rate.capacity, rate.per_second)),
    )
    if rate is not None:
        rate.taken = int(reply[-1])
    if reply[0] == 3:
        return Taken(rate_limited=True)
    if reply[0] == 2:
        return Taken(stale=reply[1].decode())
    if reply[0] == 0:
        return Taken(holder=floor_decode(reply[1]))
    floor = Floor(int(reply[1]), user_id, nickname, started_at, mode, process_id)
    return Taken(floor=floor, channel_version=reply[2].decode(), located=bool(reply[3]))


async def take_lease(
    *, channel_id: int, user_id: int, nickname: str, mode: str, process_id: str = ""
) -> tuple[Floor | None, dict[str, Any] | None]:
    """`take` without the sanctions check: (floor, None) when granted, (None, holder) when
    someone else talks."""
    taken = await take(
        channel_id=channel_id, user_id=user_id, nickname=nickname, mode=mode, process_id=process_id
    )
    return taken.floor, taken.holder


async def renew_lease(*, channel_id: int, floor: Floor) -> bool:
    """Extend the holder's lease; False when the floor is no longer this transmission's."""
    conn = await get_relay().connection()
    key = keys.floor_key(channel_id)
    return bool(await run_script(conn, _RENEW, 1, key, floor.tx_id, _lease_ms()))


async def free_lease(*, channel_id: int, floor: Floor) -> int:
    """Free the floor if this transmission still holds it; return its length in ms."""
    await run_script(
        await get_relay().connection(),
        _RELEASE,
        2,
        keys.floor_key(channel_id),
        keys.process_floors_key(floor.process_id),
        floor.tx_id,
        channel_id,
    )
    return max(0, now_ms() - floor.started_at)


# --- the floor holder's audio budget
MIN_FRAME_MS = 20  # the shortest audio a packet carries (one Opus frame)
PACKET_SLACK = 25  # MediaRecorder's first chunks may come early and small
BYTE_SLACK_MS = 1_000  # a second of audio ahead of real time (buffers flushing at once)
PACKET_OVERHEAD_BYTES = 32  # the 16-byte header and frame lengths, beside the Opus bytes


@dataclass
class TalkBudget:
    """What the floor holder may send so far: packets at the pace of real time (elapsed
    time / the 20 ms Opus frame, plus a small slack) and bytes at a realistic Opus bitrate
    (VOICE_MAX_BITRATE_BPS). A flood faster or fatter than speech is refused packet by
    packet, before it costs Redis anything; the transmission's length bounds the total."""

    started: float  # event-loop time when the floor was granted
    packets: int = 0
    bytes: int = 0

    def spend(self, *, now: float, size: int) -> None:
        elapsed_ms = max(0.0, (now - self.started) * 1000)
        packets = self.packets + 1
        if packets > elapsed_ms / MIN_FRAME_MS + PACKET_SLACK:
            raise ServiceError("too_fast", "audio packets faster than real time")
        allowed = (elapsed_ms + BYTE_SLACK_MS) * settings.VOICE_MAX_BITRATE_BPS / 8000
        if self.bytes + size > allowed + packets * PACKET_OVERHEAD_BYTES:
            raise ServiceError("too_many_bytes", "more audio bytes than speech at this length")
        self.packets, self.bytes = packets, self.bytes + size


# --- who hears a press
@dataclass(frozen=True)
class Recipients:
    """Who hears a press: `only` those users (a ranged channel whose talker shares a
    location), else everyone joined to the channel; never anyone in `excluded` (banned)."""

    only: frozenset[int] | None
    excluded: frozenset[int]


# channel id -> (the channel's sanctions version tag when read, its bans). A memo, not
# state: a process that never saw the channel reads it once; a change bumps the version.
# Kept here, not in selectors: selectors never write, not even to a memo.
_bans_seen: dict[int, tuple[str, dict[int, int | None]]] = {}


# Per event loop: channel id -> the future of its bans, for reads not yet started. The first
# presses of many channels at once (a process that just started) share one database read;
# a press never joins a read that started before it read the channel's sanctions version.
_bans_wanted: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, asyncio.Future[dict[int, int | None]]]
] = weakref.WeakKeyDictionary()


async def _channel_bans(channel_id: int) -> dict[int, int | None]:
    loop = asyncio.get_running_loop()
    wanted = _bans_wanted.setdefault(loop, {})
    future = wanted.get(channel_id)
    if future is None:
        if not wanted:
            loop.call_soon(_start_reading_bans, loop)
        future = wanted[channel_id] = loop.create_future()
    return await asyncio.shield(future)


_reading: set[asyncio.Task[None]] = set()


def _start_reading_bans(loop: asyncio.AbstractEventLoop) -> None:
    task = loop.create_task(_read_bans(loop))
    _reading.add(task)
    task.add_done_callback(_reading.discard)


async def _read_bans(loop: asyncio.AbstractEventLoop) -> None:
    wanted = _bans_wanted.pop(loop, {})
    try:
        bans = await pooled(selectors.channels_bans_until)(list(wanted))
    except asyncio.CancelledError:
        for future in wanted.values():
            future.cancel()
        raise
    except Exception as exc:
        # The presses waiting get the error (each an error frame); raised here too, it was
        # logged again as a task exception nobody retrieved.
        for future in wanted.values():
            if not future.done():
                future.set_exception(exc)
        return
    for channel_id, future in wanted.items():
        if not future.done():
            future.set_result(bans[channel_id])


# Per event loop: channel id -> (version tag, its bans read under way for joins). A crowd
# joining a channel shares one read; it is shared only by joins that read the same version,
# which are stored with the same answer the first one is.
_bans_joining: PerLoop[dict[int, tuple[str, asyncio.Future[dict[int, int | None]]]]] = PerLoop(dict)


async def bans_prepare(channel_id: int, version: bytes | None) -> None:
    """A join's part of the press: read the channel's bans now (once a process, until its
    sanctions change: `version`, the channel's sanctions version, read before), so that no
    press waits for the database before its grant. A read that fails is only logged: the
    join goes on, and a press then reads them before its grant (refused if it cannot)."""
    tag = version_tag(version)
    seen = _bans_seen.get(channel_id)
    if seen is not None and seen[0] == tag:
        return
    joining = _bans_joining.get()
    reading = joining.get(channel_id)
    if reading is None or reading[0] != tag:
        reading = joining[channel_id] = (tag, asyncio.ensure_future(_channel_bans(channel_id)))
        reading[1].add_done_callback(lambda _: _bans_read(joining, channel_id, reading))
    try:
        bans = await asyncio.shield(reading[1])
    except Exception:
        log.warning("could not read the bans of channel %s at a join", channel_id, exc_info=True)
        return
    _bans_seen[channel_id] = (tag, bans)


def _bans_read(
    joining: dict[int, tuple[str, asyncio.Future[dict[int, int | None]]]],
    channel_id: int,
    reading: tuple[str, asyncio.Future[dict[int, int | None]]],
) -> None:
    if joining.get(channel_id) is reading:
        del joining[channel_id]


async def press_recipients(*, channel_id: int, talker_id: int, range_km: int) -> Recipients:
    """Recipients of a press, in a cost that does not grow with the channel: one Redis read
    (the channel's sanctions version, plus the talker's location in a ranged channel) and a
    database read only when the channel's sanctions changed. A press reads the same in its
    `take` step and calls `recipients` directly."""
    r = get_async_redis()
    async with r.pipeline(transaction=False) as p:
        p.get(keys.channel_sanctions_version_key(channel_id))
        p.exists(keys.location_key(talker_id))
        version, located = await p.execute()
    version = version.encode() if isinstance(version, str) else version
    return await recipients(
        channel_id=channel_id,
        talker_id=talker_id,
        range_km=range_km,
        channel_version=version_tag(version),
        located=bool(located),
    )


def _excluded(bans: dict[int, int | None], talker_id: int) -> frozenset[int]:
    now = time.time() * 1000
    if not bans:
        return frozenset()
    return frozenset(uid for uid, until in bans.items() if until is None or until > now) - {
        talker_id
    }


def recipients_known(
    *, channel_id: int, talker_id: int, range_km: int, channel_version: str, located: bool
) -> Recipients | None:
    """`recipients` when it needs no I/O (the channel's bans known at this version, and no
    range to compute), else None."""
    seen = _bans_seen.get(channel_id)
    if seen is None or seen[0] != channel_version or (range_km > 0 and located):
        return None
    return Recipients(only=None, excluded=_excluded(seen[1], talker_id))


async def recipients(
    *, channel_id: int, talker_id: int, range_km: int, channel_version: str, located: bool
) -> Recipients:
    """Who hears a press, given the channel's sanctions version tag and whether the talker
    is located: no I/O unless the channel's sanctions changed since this process last read
    them (one database read). Only a ranged channel whose talker shares a location lists its
    listeners (selectors.recipients_in_range)."""
    known = recipients_known(
        channel_id=channel_id,
        talker_id=talker_id,
        range_km=range_km,
        channel_version=channel_version,
        located=located,
    )
    if known is not None:
        return known
    seen = _bans_seen.get(channel_id)
    if seen is None or seen[0] != channel_version:
        seen = (channel_version, await _channel_bans(channel_id))
        _bans_seen[channel_id] = seen
    excluded = _excluded(seen[1], talker_id)
    if range_km <= 0 or not located:
        return Recipients(only=None, excluded=excluded)
    near = await selectors.recipients_in_range(
        channel_id=channel_id,
        talker_id=talker_id,
        members=await selectors.live_members(channel_id),
        range_km=range_km,
    )
    return Recipients(only=frozenset(near - excluded), excluded=excluded)


# --- one socket's part in the floor
Result = Literal[
    "granted",
    "busy",
    "banned",
    "muted",
    "already_talking",
    "no_floor",
    "released",
    "disconnected",
    "moderated",
    "timeout",
    "lease_lost",
    "rate_limited",
]


@dataclass(eq=False)
class Talk:
    """A granted floor, as its socket holds it."""

    floor: Floor
    channel_id: int
    deadline: float  # event-loop time at which the transmission reaches its maximum length
    budget: TalkBudget
    # Done once the start is queued to Redis (or given up): audio waits for it (`audio`).
    opened: asyncio.Future[None]
    keeper: asyncio.Task[Any] | None = None  # `hold`: renews the lease, ends it at the deadline


@dataclass(eq=False)
class Seat:
    """One socket's part in the floor. The consumer keeps it; only this module changes it."""

    user_id: int
    talk: Talk | None = None
    # (channel id, the user's sanctions version, kind -> end ms or None): vouched for by the
    # version in Redis, so a press costs one Redis read, not a database round trip.
    sanctions: tuple[int, bytes | None, dict[str, int | None]] | None = None


@dataclass(frozen=True)
class FloorOutcome:
    """What a floor service decided. The consumer sends `reply` (if any) or raises
    `refusal` (an error frame, with the request's ref); it decides nothing itself."""

    result: Result
    reply: Outbound | None = None
    refusal: ServiceError | None = None
    talk: Talk | None = None  # granted
    duration_ms: int = 0  # ended


_NO_FLOOR = "you do not hold the floor for that transmission"
_GRANTED = metrics.FLOOR_REQUESTS.labels("granted")  # looked up once, not per press


def press_ready(seat: Seat, channel_id: int) -> bool:
    """A press by `seat` now would go straight to its take (no refusal, no read before it):
    its rate tokens may be charged there (`RateCharge`)."""
    cached = seat.sanctions
    return (
        seat.talk is None
        and cached is not None
        and cached[0] == channel_id
        and not _in_force(cached[2])
    )


async def request(
    seat: Seat,
    *,
    channel: Channel,
    nickname: str,
    mode: str,
    origin: str,
    process_id: str = "",
    rate: RateCharge | None = None,
) -> FloorOutcome:
    """A press of the talk button by `seat`'s socket (`origin`: its channel name, which
    hears floor.granted instead of floor.taken). Granted: every other socket of the channel
    hears floor.taken before any audio, and the lease is held until the talker lets go, the
    transmission reaches VOICE_MAX_TRANSMISSION_SECONDS or the lease is lost. `rate` is
    charged in the first take (refused: "rate_limited"); a press refused before any take
    leaves it uncharged (`rate.taken` None)."""
    started = time.perf_counter()
    outcome = await _request(
        seat,
        channel=channel,
        nickname=nickname,
        mode=mode,
        origin=origin,
        process_id=process_id,
        rate=rate,
    )
    if outcome.result == "granted":
        _GRANTED.inc()
        metrics.FLOOR_GRANT_SECONDS.observe(time.perf_counter() - started)
    else:
        metrics.FLOOR_REQUESTS.labels("busy" if outcome.result == "busy" else "refused").inc()
    return outcome


async def _request(
    seat: Seat,
    *,
    channel: Channel,
    nickname: str,
    mode: str,
    origin: str,
    process_id: str,
    rate: RateCharge | None,
) -> FloorOutcome:
    if seat.talk is not None:
        error = ServiceError("already_talking", "you hold the floor already")
        return FloorOutcome("already_talking", refusal=error)
    # Checked on every press, not only at join: staff may ban or mute in the admin while the
    # user is connected. The socket's cached sanctions hold while the user's sanctions version
    # in Redis is the one they were read at, which the take itself checks (one round trip);
    # a cached sanction in force is read again first (it may have been lifted since).
    cached = seat.sanctions
    for _ in range(3):
        if cached is None or cached[0] != channel.pk or _in_force(cached[2]):
            refusal = _refusal(await _sanctions_in_force(seat, channel.pk))
            if refusal is not None:
                return refusal
            cached = seat.sanctions
        assert cached is not None
        taken = await take(
            channel_id=channel.pk,
            user_id=seat.user_id,
            nickname=nickname,
            mode=mode,
            process_id=process_id,
            sanctions_version=version_tag(cached[1]),
            ranged=channel.range_km > 0,
            rate=rate,
        )
        rate = None  # charged once
        if taken.rate_limited:
            error = ServiceError("rate_limited", "too many messages, slow down")
            return FloorOutcome("rate_limited", refusal=error)
        if taken.stale is None:
            break
        cached = None  # changed since read: read them again
    else:
        return FloorOutcome("busy", refusal=ServiceError("busy", "try again"))
    floor = taken.floor
    if floor is None:
        reason = await selectors.busy_reason(
            taken.holder, viewer_id=seat.user_id, range_km=channel.range_km
        )
        return FloorOutcome("busy", refusal=ServiceError("busy", reason))
    heard_by = recipients_known(
        channel_id=channel.pk,
        talker_id=seat.user_id,
        range_km=channel.range_km,
        channel_version=taken.channel_version,
        located=taken.located,
    )
    if heard_by is None:
        # The channel's bans changed (or were never read here), or who is in range must be
        # listed: read before the grant, so that a press is never granted on bans that
        # could not be read, and in range is who was there at the press.
        try:
            heard_by = await recipients(
                channel_id=channel.pk,
                talker_id=seat.user_id,
                range_km=channel.range_km,
                channel_version=taken.channel_version,
                located=taken.located,
            )
        except BaseException:
            await free_lease(channel_id=channel.pk, floor=floor)
            raise
    max_seconds = settings.VOICE_MAX_TRANSMISSION_SECONDS
    loop = asyncio.get_running_loop()
    talk = Talk(
        floor=floor,
        channel_id=channel.pk,
        deadline=loop.time() + max_seconds,
        budget=TalkBudget(started=loop.time()),
        opened=loop.create_future(),
    )
    seat.talk = talk
    # 200 presses at once: the grant is the reply the talker waits for, so each press's
    # grant goes out first and its start (the stored transmission, floor.taken for the
    # channel) is written after the grants of the presses ready with it. Audio
    # waits for the start (`audio`), so every listener still hears floor.taken first.
    opening = _Opening(seat, talk, heard_by, mode, origin)
    loop.call_soon(opening.run)
    granted = FloorGranted(
        tx_id=floor.tx_id, max_ms=max_seconds * 1000, packet_ms=settings.VOICE_PACKET_MS
    )
    return FloorOutcome("granted", reply=granted, talk=talk)


class _Opening:
    """The start of a granted transmission, written after its grant (`_request`)."""

    __slots__ = ("heard_by", "mode", "origin", "seat", "talk")

    def __init__(
        self, seat: Seat, talk: Talk, heard_by: Recipients, mode: str, origin: str
    ) -> None:
        self.seat, self.talk, self.heard_by = seat, talk, heard_by
        self.mode, self.origin = mode, origin

    def run(self) -> None:
        """Write the start now (the relay's connection is open: the usual case)."""
        talk = self.talk
        if self.seat.talk is not talk:  # ended before its start: nothing was announced
            _opened(talk)
            return
        # The lease's keeper too is made after the grants of this turn (its first renewal
        # is a third of the lease away).
        talk.keeper = asyncio.get_running_loop().create_task(hold(self.seat, talk))
        relay = get_relay()
        conn = relay.connection_now()
        if conn is None:
            relay.fanout.spawn(self.run_later())
            return
        self.write(conn)

    async def run_later(self) -> None:
        talk = self.talk
        try:
            conn = await get_relay().connection()
        except Exception:
            log.warning("transmission %s not started", talk.floor.tx_id, exc_info=True)
            _opened(talk)
            if self.seat.talk is talk:
                await end(self.seat, "released")
            return
        except asyncio.CancelledError:
            _opened(talk)  # the relay is closing: no packet waits for ever
            raise
        if self.seat.talk is talk:  # else it ended meanwhile
            self.write(conn)
        _opened(talk)

    def write(self, conn: RespConnection) -> None:
        """Queue the start on the relay's connection (before any of its audio) and let the
        audio through; a start Redis refuses ends the transmission."""
        talk, seat, heard_by = self.talk, self.seat, self.heard_by
        floor = talk.floor
        try:
            started = get_relay().transmission_start_on(
                conn,
                talk.channel_id,
                floor.tx_id,
                seat.user_id,
                heard_by.only,
                excluded=heard_by.excluded,
                mode=self.mode,
                nickname=floor.nickname,
                origin=self.origin,
            )
        except Exception:
            log.exception("transmission %s not started", floor.tx_id)
            _opened(talk)
            get_relay().fanout.spawn(end(seat, "released"))
            return
        started.add_done_callback(lambda done: _start_failed(seat, talk, done))
        _opened(talk)


def _opened(talk: Talk) -> None:
    if not talk.opened.done():
        talk.opened.set_result(None)


def _in_force(until: dict[str, int | None]) -> bool:
    in_force = selectors.sanctions_in_force(until, now_ms())
    return SanctionKind.BAN in in_force or SanctionKind.MUTE in in_force


def _refusal(sanctions: set[str]) -> FloorOutcome | None:
    if SanctionKind.BAN in sanctions:
        error = NotAllowed("you are banned from this channel", code="banned")
        return FloorOutcome("banned", refusal=error)
    if SanctionKind.MUTE in sanctions:
        error = NotAllowed("a moderator muted you in this channel", code="muted")
        return FloorOutcome("muted", refusal=error)
    return None


def _start_failed(seat: Seat, talk: Talk, done: asyncio.Future[Any]) -> None:
    """The start of a granted transmission was not stored and announced (Redis went away):
    end it, so that the talker hears floor.released. Its audio never reached anyone: a
    process delivers only the packets of a transmission whose start it knows."""
    if done.cancelled() or done.exception() is None:
        return
    log.warning("transmission %s not started", talk.floor.tx_id, exc_info=done.exception())
    if seat.talk is talk:
        get_relay().fanout.spawn(end(seat, "released"))


def sanctions_known(
    seat: Seat, *, channel_id: int, version: bytes | None, until: dict[str, int | None]
) -> None:
    """The socket's join read the user's sanctions in the channel (`until`) after reading
    their sanctions version (`version`): its presses use them while the version holds."""
    seat.sanctions = (channel_id, version, until)


async def _sanctions_in_force(seat: Seat, channel_id: int) -> set[str]:
    version = await selectors.sanctions_version(seat.user_id)  # before the database read
    cached = seat.sanctions
    if cached is None or cached[0] != channel_id or cached[1] != version:
        until = await pooled(selectors.sanctions_until)(channel_id, seat.user_id)
        cached = seat.sanctions = (channel_id, version, until)
    return selectors.sanctions_in_force(cached[2], now_ms())


async def release(seat: Seat, *, tx_id: int) -> FloorOutcome:
    """The talker lets go of transmission `tx_id`: floor.released to everyone (the talker's
    socket too), through the relay."""
    talk = seat.talk
    if talk is None or talk.floor.tx_id != tx_id:
        return FloorOutcome("no_floor", refusal=ServiceError("no_floor", _NO_FLOOR))
    ended = await end(seat, "released")
    return ended or FloorOutcome("no_floor", refusal=ServiceError("no_floor", _NO_FLOOR))


async def end(
    seat: Seat, reason: ReleaseReason, *, result: Result | None = None
) -> FloorOutcome | None:
    """End `seat`'s transmission, if it has one, announcing `reason` (the socket left the
    channel or closed, a moderator acted, its clock ran out). None: it held no floor."""
    talk = seat.talk
    if talk is None:
        return None
    seat.talk = None  # first, so a packet or timer arriving meanwhile finds no floor
    keeper, talk.keeper = talk.keeper, None
    if keeper is not None and keeper is not asyncio.current_task():
        keeper.cancel()
    duration = await end_transmission(talk.channel_id, talk.floor, reason)
    return FloorOutcome(result or reason, duration_ms=duration)


async def hold(seat: Seat, talk: Talk) -> FloorOutcome | None:
    """Renew the lease of `talk` while it lasts; end it at its maximum length ("timeout"), or
    at once if the lease was lost ("lease_lost", announced as released: Redis restarted,
    say). None: it ended otherwise first."""
    loop = asyncio.get_running_loop()
    reason: ReleaseReason = "timeout"
    result: Result = "timeout"
    while (left := talk.deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, settings.VOICE_FLOOR_LEASE_SECONDS / 3))
        if seat.talk is not talk:
            return None
        if loop.time() >= talk.deadline:
            break
        try:
            if not await renew_lease(channel_id=talk.channel_id, floor=talk.floor):
                reason, result = "released", "lease_lost"
                break
        except Exception:
            log.warning("could not renew the floor of transmission %s", talk.floor.tx_id)
    if seat.talk is not talk:
        return None
    try:
        return await end(seat, reason, result=result)
    except Exception:
        log.exception("could not end transmission %s", talk.floor.tx_id)
        return None


async def end_transmission(channel_id: int, floor: Floor, reason: ReleaseReason) -> int:
    """Free the lease (if this transmission still holds it) and announce floor.released to
    the channel; returns the transmission's length in ms. Also for a dead process's floors."""
    duration = await free_lease(channel_id=channel_id, floor=floor)
    await get_relay().transmission_end(
        channel_id, floor.tx_id, talker_id=floor.user_id, duration_ms=duration, reason=reason
    )
    return duration


async def audio(seat: Seat, data: bytes) -> None:
    """One audio packet from `seat`'s socket: relayed and kept if it belongs to the floor it
    holds, within the transmission's length, pace and bytes (TalkBudget) and the channel's
    held-audio cap. The hot path: no database, one Redis round trip; a refusal raises
    ServiceError (the packet is neither relayed nor kept; the floor stays)."""
    try:
        header = PacketHeader.parse(data)
    except ValueError:
        raise ServiceError(
            "bad_packet", "an audio packet is a 16-byte header (kind 1 or 2) and a payload"
        ) from None
    talk = seat.talk
    if talk is None or header.tx_id != talk.floor.tx_id:
        raise ServiceError("no_floor", _NO_FLOOR)
    if not talk.opened.done():  # its start, written after the grant, goes out first
        await asyncio.shield(talk.opened)
        if seat.talk is not talk:
            raise ServiceError("no_floor", _NO_FLOOR)
    now = asyncio.get_running_loop().time()
    if now > talk.deadline:
        raise ServiceError("no_floor", "the transmission reached its maximum length")
    talk.budget.spend(now=now, size=len(data))  # pace and bytes of real speech
    if not await get_relay().audio(talk.channel_id, talk.floor.tx_id, data):
        raise ServiceError("channel_full", "this channel holds as much audio as it may")
