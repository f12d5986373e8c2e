"""Services emit real-time events through here and never touch sockets themselves.

Every event is a pydantic model (`Event`), defined in its app's `events.py`; its `type`
names the receiving consumer handler ("presence.update" -> `presence_update`). What travels
on the channel layer, and what a handler receives, is the model's JSON form.

`send_on_commit` defers the group send until the surrounding transaction commits (Zulip's
`send_event_on_commit`), so a rolled-back write never announces itself.

realtime's own events (socket close, stream nudge, presence) are defined here too: realtime
imports no product, so product events subclass `Event` in their own app.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import transaction
from pydantic import BaseModel, ConfigDict
from redis.exceptions import NoScriptError, RedisError

from .dbpool import pool_call_loop
from .layers import LeanRedisChannelLayer
from .metrics import EVENTS_UNSENT

log = logging.getLogger(__name__)

Payload = dict[str, Any]
_listeners: list[Callable[[str, Payload], None]] = []


class Event(BaseModel):
    """Base of every channel-layer event. Subclasses give `type` a Literal default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


def _wire(event: Event) -> Payload:
    # A dict would skip the model's validation: refuse it loudly, at the call site.
    if not isinstance(event, Event):
        raise TypeError(f"events are realtime.events.Event models, not {type(event).__name__}")
    return event.model_dump(mode="json")


def _send(group: str, payload: Payload) -> None:
    for listener in _listeners:
        listener(group, payload)
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, payload)
    except (OSError, RedisError) as exc:
        # The write has committed: failing the request now would make the client retry what
        # is already done. A live push is best effort (what must arrive is in the durable
        # stream, fetched on the reconnect that a Redis outage forces on every socket).
        EVENTS_UNSENT.inc()
        log.warning("event %s to %s not sent: %r", payload.get("type"), group, exc)


def send_on_commit(group: str, event: Event, *, wait: bool = True) -> None:
    """Send `event` to `group` after the surrounding transaction commits. `wait=False`: on a
    socket's database thread (realtime.dbpool), hand the send to the socket's event loop and
    return at once. The thread is not held for the Redis round trips, but two such sends may
    arrive in either order: only for events whose receiver does not depend on their order
    (the stream's nudges: a gap makes the socket read)."""
    payload = _wire(event)
    if not wait:
        transaction.on_commit(lambda: _send_soon(group, payload))
    else:
        transaction.on_commit(lambda: _send(group, payload))


def _send_soon(group: str, payload: Payload) -> None:
    loop = pool_call_loop()
    layer = get_channel_layer()
    if loop is None or layer is None or not loop.is_running():
        _send(group, payload)
        return
    for listener in _listeners:
        listener(group, payload)
    send = layer.group_send_direct if isinstance(layer, LeanRedisChannelLayer) else layer.group_send
    sent = asyncio.run_coroutine_threadsafe(send(group, payload), loop)
    sent.add_done_callback(functools.partial(_unsent, group, payload))


def _unsent(group: str, payload: Payload, sent: concurrent.futures.Future[None]) -> None:
    exc = None if sent.cancelled() else sent.exception()
    if exc is not None:
        EVENTS_UNSENT.inc()
        log.warning("event %s to %s not sent: %r", payload.get("type"), group, exc)


async def send_now(group: str, event: Event) -> None:
    """For async code outside any transaction (consumers relaying live state). Through the
    members' process subscriptions (realtime.layers' `group_send_direct`: one script, one
    PUBLISH a process): channels_redis' group_send took a pipeline and a script to send,
    then on each receiving process a pop, a backup copy and its clean-up, round trips each
    (a reconnect storm's member.joined announcements: 8-9 % of a server's profile, 3-4 %
    this way; benchmarks/reconnect_storm.py)."""
    payload = _wire(event)
    layer = get_channel_layer()
    if isinstance(layer, LeanRedisChannelLayer):
        await layer.group_send_direct(group, payload)
    elif layer is not None:
        await layer.group_send(group, payload)


async def send_to(channel_name: str, event: Event) -> None:
    """To one socket's channel (any process), for async code outside any transaction."""
    payload = _wire(event)
    layer = get_channel_layer()
    if isinstance(layer, LeanRedisChannelLayer) and "!" in channel_name:
        if layer.deliver_local(channel_name, payload):
            return  # a socket of this process: in memory
        if not await layer.send_direct(channel_name, payload):
            await _send_specific(layer, channel_name, payload)
    elif isinstance(layer, RedisChannelLayer) and "!" in channel_name:
        await _send_specific(layer, channel_name, payload)
    elif layer is not None:
        await layer.send(channel_name, payload)


# channels_redis's send() to one socket's channel takes four round trips (trim the expired,
# count, add, set the expiry); a hot path (video chat's matched/ended, once per match) makes
# one. Same key, serializer, capacity and expiry as the layer's own send (channels_redis 4.3).
_SPECIFIC_SEND_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
_SPECIFIC_SEND_SHA = hashlib.sha1(_SPECIFIC_SEND_LUA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


async def _send_specific(layer: RedisChannelLayer, channel_name: str, payload: Payload) -> None:
    message = {**payload, "__asgi_channel__": channel_name}
    key = layer.prefix + layer.non_local_name(channel_name)
    client = layer.connection(layer.consistent_hash(channel_name))
    now = time.time()
    args = (
        int(now) - int(layer.expiry),
        layer.get_capacity(channel_name),
        now,
        layer.serialize(message),
        int(layer.expiry),
    )
    try:
        sent = await client.evalsha(_SPECIFIC_SEND_SHA, 1, key, *args)
    except NoScriptError:  # a fresh or restarted server
        await client.script_load(_SPECIFIC_SEND_LUA)
        sent = await client.evalsha(_SPECIFIC_SEND_SHA, 1, key, *args)
    if not sent:
        raise ChannelFull()


@contextmanager
def capture_events() -> Iterator[list[tuple[str, Payload]]]:
    """Tests: collect (group, JSON form) of every event sent on commit while the block runs."""
    seen: list[tuple[str, Payload]] = []

    def listener(group: str, payload: Payload) -> None:
        seen.append((group, payload))

    _listeners.append(listener)
    try:
        yield seen
    finally:
        _listeners.remove(listener)


# --- realtime's own events
class SocketClose(Event):
    """Close the sockets of a group (logout, ban, password change) with `code`."""

    type: Literal["socket.close"] = "socket.close"
    code: int


class StreamNudge(Event):
    """The device's durable stream has new items: its socket reads them (stream.md), or
    sends `frames` (the new items, rendered, with their seqs) when it has sent all before."""

    type: Literal["stream.nudge"] = "stream.nudge"
    frames: list[dict[str, Any]] = []


class PresenceUpdate(Event):
    type: Literal["presence.update"] = "presence.update"
    user_id: int
    online: bool


class PresenceRevoke(Event):
    """To a user's sockets: you may no longer see these users online (a block, no shared
    room left); stop watching them."""

    type: Literal["presence.revoke"] = "presence.revoke"
    user_ids: list[int]
