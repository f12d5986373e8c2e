"""Real-time events CallsApp emits. Durable items travel in the device stream (realtime.stream);
these are live hints only."""

from __future__ import annotations

from typing import Any, Literal

from realtime.events import Event


class KeyCountsChanged(Event):
    """Someone claimed one of the device's one-time keys: its socket re-sends the counts
    (they also ride on the device's next sync frame). Handled as `messaging_counts`."""

    type: Literal["messaging.counts"] = "messaging.counts"


class CommunityPush(Event):
    """A community changed (a post, a deletion, a like count): the member's CallsApp sockets
    forward `frame` (a schemas.Community* frame) as it is. Live and lossy: opening the
    community reads everything again. Handled as `messaging_community`."""

    type: Literal["messaging.community"] = "messaging.community"
    frame: dict[str, Any]


class BotPush(Event):
    """A message in one of the user's bot chats (the bot's, or their own from another page):
    their CallsApp sockets forward `frame` (a schemas.BotMessaged) as it is. Live and lossy:
    opening the chat reads it again. Handled as `messaging_bot`."""

    type: Literal["messaging.bot"] = "messaging.bot"
    frame: dict[str, Any]
