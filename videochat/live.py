"""Video chat's live state in Redis besides the queue (which is matchmaking's): which socket
is the user's current one. It expires on its own and is deleted when the socket closes. (A
socket's public card travels with its queue entry, in matchmaking's step.)"""

from __future__ import annotations

from django.conf import settings

from realtime.redis import get_async_redis

from .keys import socket_key

# Compare-and-delete: a socket may clean up unless a newer socket of the user owns the key
# (an expired key means nobody newer came).
_RELEASE = """
local owner = redis.call('GET', KEYS[1])
if not owner then return 1 end
if owner == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


async def socket_claim(user_id: int, channel_name: str) -> str | None:
    """Make this the user's video chat socket; returns the channel it replaced, if any."""
    ttl = settings.VIDEOCHAT_CARD_TTL_SECONDS
    r = get_async_redis()
    old = await r.set(socket_key(user_id), channel_name, ex=ttl, get=True)
    old_name = old.decode() if isinstance(old, bytes) else old if isinstance(old, str) else None
    return old_name if old_name and old_name != channel_name else None


async def socket_release(user_id: int, channel_name: str) -> bool:
    """Give up the socket key if still ours; False when a newer socket took it over."""
    r = get_async_redis()
    return bool(await r.eval(_RELEASE, 1, socket_key(user_id), channel_name))  # type: ignore[misc]


async def socket_owner(user_id: int) -> str | None:
    raw = await get_async_redis().get(socket_key(user_id))
    return raw.decode() if isinstance(raw, bytes) else raw
