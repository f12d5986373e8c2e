"""A socket's connect in one Redis round trip.

A connect wrote Redis four times, one after the other: its admission (realtime.ratelimit's
connect check), its groups (the channel layer's sorted sets), its presence entry
(realtime.presence.socket_up) and, when it brought the user online, a read of who watches
them (realtime.consumers.presence_announce). In a reconnect storm each round trip is a
pipeline built, a write to Redis, a wake-up of the event loop and a reply parsed, per socket.
Here one script does all four, the writes only when the connect is admitted. It needs the
channel layer's groups in the Redis that REDIS_URL names (the settings' default); with any
other layer (`supported()` is False) the consumer takes the four steps one by one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings

from .batching import PerLoop
from .fanout import RespConnection, Script, run_script
from .keys import connect_rate_key, epoch_key, presence_group, presence_key, process_sockets_key
from .layers import LeanRedisChannelLayer
from .ratelimit import CONNECT_CHECK_LUA

# After the connect check (KEYS 1-3, ARGV 1-7, see realtime.ratelimit): KEYS[4] the
# process's sockets hash, KEYS[5] the epoch key, KEYS[6] the layer's key of the user's
# presence group, KEYS[7..] the layer's keys of the socket's groups. ARGV[8] the socket's
# channel name, ARGV[9] its presence expiry score, ARGV[10] the presence TTL, ARGV[11] its
# entry in the process's hash, ARGV[12] a fresh epoch, ARGV[13] the layer's group expiry,
# ARGV[14] '1' to read the presence group's members when the user comes online.
# Returns the refusal (1-3) or {0, the user's live sockets before, epoch, watchers}.
_OPEN_LUA = (
    CONNECT_CHECK_LUA
    + """
local socket = ARGV[8]
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local before = redis.call('ZCARD', KEYS[3])
redis.call('ZADD', KEYS[3], ARGV[9], socket)
redis.call('EXPIRE', KEYS[3], ARGV[10])
redis.call('HSET', KEYS[4], socket, ARGV[11])
redis.call('SET', KEYS[5], ARGV[12], 'NX')
local epoch = redis.call('GET', KEYS[5])
local group_expiry = tonumber(ARGV[13])
for i = 7, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[1], socket)
  redis.call('EXPIRE', KEYS[i], group_expiry)
end
local watchers = {}
if before == 0 and ARGV[14] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], 0, math.floor(tonumber(ARGV[1])) - group_expiry)
  watchers = redis.call('ZRANGE', KEYS[6], 0, -1)
end
return {0, before, epoch, watchers}
"""
)
_OPEN_SCRIPT = Script.of(_OPEN_LUA)


class _Connection:
    """This event loop's connection for the scripts: realtime.fanout's lean one, not
    redis-py's (whose command, pool and parser cost were most of a connect's Redis CPU in a
    storm's profile); the scripts of one turn of the loop go out in one write. A dropped
    connection fails its callers (ConnectionError: those sockets are told to reconnect)
    and the next call opens another."""

    def __init__(self) -> None:
        self._conn: RespConnection | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> RespConnection:
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn
        async with self._lock:
            if self._conn is None or not self._conn.is_open:
                self._conn = await RespConnection.open(settings.REDIS_KEY_PREFIX + "connects")
            return self._conn


_connections = PerLoop(_Connection)


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new socket writes once admitted: its channel name, its groups, its entry in
    its process's hash (realtime.liveness), and whether it announces the user online."""

    socket: str
    groups: Sequence[str]
    process_id: str
    entry: str
    announce: bool


@dataclass(frozen=True, slots=True)
class Opened:
    """`refusal`: 0 admitted, 1 user rate, 2 IP rate, 3 too many sockets. `written`: the
    Opening's groups and presence are in Redis; then whether the user was offline before,
    the Redis epoch, and the channels that watch the user's presence (read only when the
    socket brought them online and announces it)."""

    refusal: int = 0
    written: bool = False
    first: bool = False
    epoch: str = ""
    watchers: list[str] = field(default_factory=list)


def _layer() -> LeanRedisChannelLayer | None:
    """The channel layer, when its groups live in REDIS_URL's Redis (one host)."""
    layer = get_channel_layer()
    if not isinstance(layer, LeanRedisChannelLayer) or len(layer.hosts) != 1:
        return None
    return layer if layer.hosts[0].get("address") == settings.REDIS_URL else None


def supported() -> bool:
    return _layer() is not None


async def open_socket(*, user_id: int, ip: str | None, opening: Opening) -> Opened:
    """Admit a new socket of `user_id` from `ip` and, if admitted, write its `opening`.
    Only when `supported()`."""
    layer = _layer()
    assert layer is not None, "open_socket needs the channel layer in REDIS_URL's Redis"
    now = time.time()
    user_bucket = connect_rate_key("user", user_id)
    keys = [
        user_bucket,
        connect_rate_key("ip", ip) if ip else user_bucket,
        presence_key(user_id),
        process_sockets_key(opening.process_id),
        epoch_key(),
        layer._group_key(presence_group(user_id)),
        *(layer._group_key(group) for group in opening.groups),
    ]
    args = (
        len(keys),
        *keys,
        now,
        settings.WS_CONNECT_USER_BURST,
        settings.WS_CONNECT_USER_PER_SECOND,
        settings.WS_CONNECT_IP_BURST,
        settings.WS_CONNECT_IP_PER_SECOND,
        settings.WS_MAX_SOCKETS_PER_USER,
        "1" if ip else "0",
        opening.socket,
        now + settings.PRESENCE_TTL_SECONDS,
        settings.PRESENCE_TTL_SECONDS,
        opening.entry,
        os.urandom(16).hex(),  # fresh each time: it names this Redis's life (presence.py)
        layer.group_expiry,
        "1" if opening.announce else "0",
    )
    reply = await run_script(await _connections.get().get(), _OPEN_SCRIPT, *args)
    if not isinstance(reply, list):
        return Opened(refusal=int(reply))
    _, before, epoch, watchers = reply
    return Opened(
        written=True,
        first=int(before) == 0,
        epoch=epoch.decode() if isinstance(epoch, bytes) else str(epoch or ""),
        watchers=[w.decode() if isinstance(w, bytes) else str(w) for w in watchers],
    )


async def script_connection() -> RespConnection:
    """This event loop's lean connection for scripts (the connect's, here): other steps of a
    storm's socket run their scripts on it too (voice.services' join). Only when
    `supported()`."""
    return await _connections.get().get()


def group_key(group: str) -> bytes:
    """The channel layer's key of `group`'s sorted set, for a script that joins it as
    `group_add` would (ZADD the channel name at now, EXPIRE `group_expiry()`). Only when
    `supported()`."""
    layer = _layer()
    assert layer is not None, "group_key needs the channel layer in REDIS_URL's Redis"
    key = layer._group_key(group)
    return key if isinstance(key, bytes) else str(key).encode()


def group_expiry() -> int:
    layer = _layer()
    assert layer is not None, "group_expiry needs the channel layer in REDIS_URL's Redis"
    return int(layer.group_expiry)
