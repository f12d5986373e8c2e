"""The internal events video chat consumers send each other.

Events go consumer to consumer through the channel layer, addressed to a channel name (the
partner may be on another process). Their "type" names the receiving handler
(videochat.matched -> VideochatConsumer.videochat_matched). Only the consumer turns them
into socket frames (schemas.py); nothing here is ever stored. Group names are in keys.py.
"""

from __future__ import annotations

from typing import Any, Literal

from realtime.events import Event


class PartnerEvent(Event):
    """From the partner's socket, about one match: ignored unless it is the current one."""

    match_id: str
    from_id: int


class Matched(PartnerEvent):
    """To the partner who was waiting: you are matched with me; you answer."""

    type: Literal["videochat.matched"] = "videochat.matched"
    from_channel: str
    card: dict[str, str]


class Ended(PartnerEvent):
    type: Literal["videochat.ended"] = "videochat.ended"
    reason: str


class Signal(PartnerEvent):
    type: Literal["videochat.signal"] = "videochat.signal"
    kind: str
    data: dict[str, Any]


class Chat(PartnerEvent):
    type: Literal["videochat.chat"] = "videochat.chat"
    text: str
    lang: str


class Banned(Event):
    """To the user's video chat sockets: staff banned them; they close."""

    type: Literal["videochat.banned"] = "videochat.banned"
    ban_id: int


class Replaced(Event):
    """To an older socket of the same user: a newer one took over."""

    type: Literal["videochat.replaced"] = "videochat.replaced"
