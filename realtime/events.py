"""Services emit real-time events through here and never touch sockets themselves.

`send_on_commit` defers the group send until the surrounding transaction commits (Zulip's
`send_event_on_commit`), so a rolled-back write never announces itself. The payload is
round-tripped through JSON first, as a cheap guarantee that it is plain data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

Event = dict[str, Any]
_listeners: list[Callable[[str, Event], None]] = []


def _send(group: str, payload: Event) -> None:
    for listener in _listeners:
        listener(group, payload)
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, payload)


def send_on_commit(group: str, payload: Event) -> None:
    """Send `payload` (its "type" names the consumer handler) to `group` after commit."""
    if "type" not in payload:
        raise ValueError("an event needs a 'type' naming its handler")
    data = json.loads(json.dumps(payload))
    transaction.on_commit(lambda: _send(group, data))


async def send_now(group: str, payload: Event) -> None:
    """For async code outside any transaction (consumers relaying live state)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, payload)


async def send_to(channel_name: str, payload: Event) -> None:
    """To one socket's channel (any process), for async code outside any transaction."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(channel_name, payload)


@contextmanager
def capture_events() -> Iterator[list[tuple[str, Event]]]:
    """Tests: collect (group, payload) of every event sent while the block runs."""
    seen: list[tuple[str, Event]] = []

    def listener(group: str, payload: Event) -> None:
        seen.append((group, payload))

    _listeners.append(listener)
    try:
        yield seen
    finally:
        _listeners.remove(listener)
