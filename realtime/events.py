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

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

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


def send_on_commit(group: str, event: Event) -> None:
    """Send `event` to `group` after the surrounding transaction commits."""
    payload = _wire(event)
    transaction.on_commit(lambda: _send(group, payload))


async def send_now(group: str, event: Event) -> None:
    """For async code outside any transaction (consumers relaying live state)."""
    payload = _wire(event)
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, payload)


async def send_to(channel_name: str, event: Event) -> None:
    """To one socket's channel (any process), for async code outside any transaction."""
    payload = _wire(event)
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(channel_name, payload)


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
    """The device's durable stream has new items: its socket reads them (stream.md)."""

    type: Literal["stream.nudge"] = "stream.nudge"


class PresenceUpdate(Event):
    type: Literal["presence.update"] = "presence.update"
    user_id: int
    online: bool
