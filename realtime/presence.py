"""Online status in Redis: a sorted set per user of their live sockets, scored by expiry.

A socket refreshes its entry on every heartbeat, so a process that dies without saying
goodbye stops counting after PRESENCE_TTL_SECONDS. Whether others may *see* the status is
the user's privacy setting and the watcher's relation to them (realtime.hooks.shown_to),
applied by `visible_online`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from django.conf import settings

from .keys import epoch_key, presence_key, process_sockets_key
from .redis import get_async_redis, get_redis


def _expiry() -> float:
    return time.time() + settings.PRESENCE_TTL_SECONDS


async def socket_up(
    user_id: int, socket_id: str, *, process_id: str = "", entry: str = ""
) -> tuple[bool, str]:
    """Record a live socket (and, with `process_id`, list it under its process for
    realtime.liveness). Returns (whether the user was offline before it, the Redis epoch
    the socket's state was written in: see `liveness.Liveness.beat`)."""
    r = get_async_redis()
    k = presence_key(user_id)
    async with r.pipeline(transaction=True) as p:
        p.zremrangebyscore(k, "-inf", time.time())
        p.zcard(k)
        p.zadd(k, {socket_id: _expiry()})
        p.expire(k, settings.PRESENCE_TTL_SECONDS)
        if process_id:
            p.hset(process_sockets_key(process_id), socket_id, entry)
            # Fresh each time (it names this Redis's life); urandom costs a fifth of uuid4.
            p.set(epoch_key(), os.urandom(16).hex(), nx=True)
            p.get(epoch_key())
        replies = await p.execute()
    epoch = replies[-1] if process_id else b""
    return replies[1] == 0, epoch.decode() if isinstance(epoch, bytes) else str(epoch or "")


async def socket_down(user_id: int, socket_id: str, *, process_id: str = "") -> bool:
    """Forget a socket; True when it was the user's last one."""
    r = get_async_redis()
    k = presence_key(user_id)
    async with r.pipeline(transaction=True) as p:
        p.zrem(k, socket_id)
        p.zremrangebyscore(k, "-inf", time.time())
        p.zcard(k)
        if process_id:
            p.hdel(process_sockets_key(process_id), socket_id)
        left = (await p.execute())[2]
    return left == 0


async def heartbeat(user_id: int, socket_id: str) -> None:
    r = get_async_redis()
    k = presence_key(user_id)
    async with r.pipeline(transaction=False) as p:
        p.zadd(k, {socket_id: _expiry()})
        p.expire(k, settings.PRESENCE_TTL_SECONDS)
        await p.execute()


async def online_ids(user_ids: Iterable[int]) -> set[int]:
    """Which of `user_ids` have a live socket (ignores privacy: see `visible_online`)."""
    ids = list(user_ids)
    if not ids:
        return set()
    r = get_async_redis()
    now = time.time()
    async with r.pipeline(transaction=False) as p:
        for uid in ids:
            p.zcount(presence_key(uid), now, "+inf")
        counts = await p.execute()
    return {uid for uid, n in zip(ids, counts, strict=True) if n}


async def visible_online(user_ids: Iterable[int], shown: set[int]) -> dict[int, bool]:
    """Status as a watcher may see it: a user not `shown` to them (hidden by choice, or not
    the watcher's to see) always reads offline."""
    ids = list(user_ids)
    online = await online_ids(uid for uid in ids if uid in shown)
    return {uid: uid in online for uid in ids}


def online_ids_sync(user_ids: Iterable[int]) -> set[int]:
    """`online_ids` for sync code (HTTP views)."""
    ids = list(user_ids)
    if not ids:
        return set()
    now = time.time()
    with get_redis().pipeline(transaction=False) as p:
        for uid in ids:
            p.zcount(presence_key(uid), now, "+inf")
        counts = p.execute()
    return {uid for uid, n in zip(ids, counts, strict=True) if n}
