"""CBLINE's transmission storage in Redis: each transmission's meta, who may hear it, its
packets (replay for a listener who missed it) and the channel's recent list, all living
VOICE_AUDIO_TTL_SECONDS; audio is never in SQL or on disk. The relay (voice/relay.py) stores
through here as it publishes, so a packet is kept exactly when it is sent.

A channel holds at most VOICE_CHANNEL_MAX_HELD_BYTES of audio at once, counted in time
windows (`held_window_seconds`): a packet that would go past it is neither published nor
kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.asyncio.client import Pipeline

from realtime.fanout import RespConnection, RespError, resp_command
from realtime.redis import get_async_redis

from .keys import (
    held_bytes_key,
    pubsub_channel,
    recent_key,
    sockets_key,
    tx_audio_key,
    tx_key,
    tx_recipients_key,
)


def held_window_seconds() -> int:
    """Audio stays in Redis at most the TTL after a transmission's last packet, and a
    transmission lasts at most its maximum length: everything still held was stored within
    the current or the previous window of this length. Also how long a process may need to
    know a transmission it delivers."""
    return settings.VOICE_AUDIO_TTL_SECONDS + settings.VOICE_MAX_TRANSMISSION_SECONDS


# KEYS: audio list, held bytes now, held bytes in the previous window.
# ARGV: packet, pub/sub channel, audio TTL, held-bytes cap, window seconds.
# Publishes and stores the packet unless the channel would hold more than the cap.
_AUDIO_LUA = """
local size = string.len(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
held = held + tonumber(redis.call('GET', KEYS[3]) or '0')
if held + size > tonumber(ARGV[4]) then return 0 end
redis.call('INCRBY', KEYS[2], size)
redis.call('EXPIRE', KEYS[2], 2 * tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_AUDIO_SHA = hashlib.sha1(_AUDIO_LUA.encode()).hexdigest().encode()  # noqa: S324 - Redis' name


# KEYS: the channel's sockets hash, the transmission's recipient set. ARGV: TTL, talker.
# Who was joined at the press, for tx.fetch and late joiners' offers: copied inside Redis
# (microseconds a member, one round trip), never read member by member into Python.
_SNAPSHOT_LUA = """
local ids = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local uid = string.match(v, '"user_id": *(%d+)')
  if uid and uid ~= ARGV[2] then
    ids[#ids + 1] = uid
    if #ids == 4000 then redis.call('SADD', KEYS[2], unpack(ids)); ids = {} end
  end
end
if #ids > 0 then redis.call('SADD', KEYS[2], unpack(ids)) end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Heard:
    """Who may hear a transmission live, as stored for a process that learns it late."""

    channel_id: int
    talker_id: int
    recipients: frozenset[int] | None  # None: everyone joined to the channel
    excluded: frozenset[int]  # banned: never, even with recipients None


def start_commands(
    *,
    channel_id: int,
    tx_id: int,
    talker_id: int,
    recipients: Iterable[int] | None,
    excluded: frozenset[int],
    started_at: int,
    mode: str,
    nickname: str,
    meta: dict[str, str | int],
) -> list[bytes]:
    """The commands (RESP, for the relay's connection, which also publishes the start) that
    store a new transmission. With `recipients` None the cost does not grow with the
    channel: who was joined at the press is snapshotted inside Redis."""
    ttl = settings.VOICE_AUDIO_TTL_SECONDS
    fields: dict[Any, str | int] = {
        **meta,
        "nickname": nickname,
        "tx_id": tx_id,
        "channel_id": channel_id,
        "talker_id": talker_id,
        "started_at": started_at,
        "mode": mode,
        # Live audio goes to everyone joined (minus `excluded`); fetching it later is for
        # those joined at the press only, whose set is snapshotted below.
        "everyone": 0,
        "live_all": int(recipients is None),  # a process that learns the tx late
        "excluded": ",".join(map(str, sorted(excluded))),
    }
    pairs = [part for item in fields.items() for part in item]
    out = [
        resp_command(b"HSET", tx_key(tx_id), *pairs),
        resp_command(b"EXPIRE", tx_key(tx_id), ttl),
    ]
    if recipients is None:
        out.append(
            resp_command(
                b"EVAL",
                _SNAPSHOT_LUA,
                2,
                sockets_key(channel_id),
                tx_recipients_key(tx_id),
                ttl,
                talker_id,
            )
        )
    else:
        listed = list(recipients)
        if listed:
            out.append(resp_command(b"SADD", tx_recipients_key(tx_id), *listed))
            out.append(resp_command(b"EXPIRE", tx_recipients_key(tx_id), ttl))
    out += [
        resp_command(b"ZADD", recent_key(channel_id), started_at, tx_id),
        resp_command(b"ZREMRANGEBYSCORE", recent_key(channel_id), "-inf", started_at - ttl * 1000),
        resp_command(b"EXPIRE", recent_key(channel_id), ttl),
    ]
    return out


async def stage_end(pipe: Pipeline, *, tx_id: int, ended_at: int) -> None:
    """Queue on `pipe` the end of a transmission (its length as stored); the audio keeps its
    TTL so it can still be replayed."""
    started = await get_async_redis().hget(tx_key(tx_id), "started_at")
    if started is not None:
        # hset would recreate an expired hash without a TTL; only touch a live one.
        stored_ms = ended_at - int(started)
        pipe.hset(tx_key(tx_id), mapping={"ended_at": ended_at, "duration_ms": stored_ms})


async def store_and_publish(
    conn: RespConnection, *, channel_id: int, tx_id: int, packet: bytes
) -> bool:
    """Publish one packet on the channel and keep it for replay, in one round trip on the
    relay's own connection; False (and nothing published or kept) when the channel already
    holds VOICE_CHANNEL_MAX_HELD_BYTES of audio."""
    window = held_window_seconds()
    now_window = int(time.time()) // window
    args = (
        3,
        tx_audio_key(tx_id),
        held_bytes_key(channel_id, now_window),
        held_bytes_key(channel_id, now_window - 1),
        packet,
        pubsub_channel(channel_id),
        settings.VOICE_AUDIO_TTL_SECONDS,
        settings.VOICE_CHANNEL_MAX_HELD_BYTES,
        window,
    )
    try:
        (stored,) = await conn.call(resp_command(b"EVALSHA", _AUDIO_SHA, *args), 1)
    except RespError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        (stored,) = await conn.call(resp_command(b"EVAL", _AUDIO_LUA, *args), 1)
    return bool(stored)


# --- reads
async def heard(tx_id: int) -> Heard | None:
    """Who may hear `tx_id` live (a process that subscribed after its start learns it
    here); None once it expired."""
    pipe = get_async_redis().pipeline(transaction=False)
    pipe.hmget(tx_key(tx_id), ["channel_id", "talker_id", "live_all", "excluded"])
    pipe.smembers(tx_recipients_key(tx_id))
    (channel, talker, live_all, excluded), members = await pipe.execute()
    if channel is None:
        return None
    return Heard(
        channel_id=int(channel),
        talker_id=int(talker),
        recipients=None if live_all == b"1" else frozenset(int(m) for m in members),
        excluded=decode_ids(excluded),
    )


async def replay(tx_id: int) -> tuple[dict[str, Any], list[bytes]] | None:
    """Meta and the packets still stored, in order; None once the transmission expired.
    Authorisation is the caller's: check `may_hear` first."""
    pipe = get_async_redis().pipeline(transaction=False)
    pipe.hgetall(tx_key(tx_id))
    pipe.lrange(tx_audio_key(tx_id), 0, -1)
    raw, packets = await pipe.execute()
    if not raw:
        return None
    return decode_meta(raw), list(packets)


async def may_hear(tx_id: int, user_id: int) -> bool:
    """From the stored recipient set: may `user_id` fetch `tx_id` (the talker may)."""
    pipe = get_async_redis().pipeline(transaction=False)
    pipe.hmget(tx_key(tx_id), ["talker_id", "everyone", "excluded"])
    pipe.sismember(tx_recipients_key(tx_id), str(user_id))
    (talker, everyone, excluded), member = await pipe.execute()
    if talker is None:
        return False
    if int(talker) == user_id:
        return True
    if user_id in decode_ids(excluded):
        return False
    return everyone == b"1" or bool(member)


async def recent(channel_id: int, *, hearer: int | None = None) -> list[dict[str, Any]]:
    """Transmissions of the channel still on the server, oldest first (meta only); with
    `hearer`, only those that user may fetch (a listener then, or the talker)."""
    redis = get_async_redis()
    tx_ids: list[Any] = await redis.zrange(recent_key(channel_id), 0, -1)
    return await recent_of(tx_ids, hearer=hearer)


async def recent_of(tx_ids: list[Any], *, hearer: int | None = None) -> list[dict[str, Any]]:
    """`recent` of the ids its channel's list gave (a caller that read the list already)."""
    if not tx_ids:
        return []
    pipe = get_async_redis().pipeline(transaction=False)
    for tx in tx_ids:
        pipe.hgetall(tx_key(int(tx)))
        pipe.sismember(tx_recipients_key(int(tx)), str(hearer or 0))
    replies = await pipe.execute()
    out = []
    for raw, listed in zip(replies[::2], replies[1::2], strict=True):
        if not raw:
            continue
        meta = decode_meta(raw)
        heard = hearer not in meta["excluded"] and (meta["everyone"] or listed)
        if hearer is None or meta["talker_id"] == hearer or heard:
            out.append(meta)
    return out


_INT_FIELDS = {"tx_id", "channel_id", "talker_id", "started_at", "ended_at", "duration_ms"}


def decode_ids(raw: bytes | str | None) -> frozenset[int]:
    """A comma-separated id list as stored in a transmission's meta hash."""
    if not raw:
        return frozenset()
    text = raw.decode() if isinstance(raw, bytes) else raw
    return frozenset(int(part) for part in text.split(",") if part)


def decode_meta(raw: dict[bytes, bytes]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        name, value = k.decode(), v.decode()
        meta[name] = int(value) if name in _INT_FIELDS else value
    meta["everyone"] = meta.get("everyone") == "1"
    meta["excluded"] = decode_ids(meta.get("excluded"))
    return meta
