"""Channels group names and the internal events video chat consumers send each other.

Events go consumer to consumer through the channel layer, addressed to a channel name (the
partner may be on another process). Their "type" names the receiving handler
(videochat.matched -> VideochatConsumer.videochat_matched). Only the consumer turns them
into socket frames (schemas.py); nothing here is ever stored.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]


def videochat_user_group(user_id: int) -> str:
    """The user's video chat sockets (a ban closes them)."""
    return f"videochat.user.{user_id}"


def matched(*, match_id: str, from_id: int, from_channel: str, card: dict[str, str]) -> Event:
    """To the partner who was waiting: you are matched with me; you answer."""
    return {
        "type": "videochat.matched",
        "match_id": match_id,
        "from_id": from_id,
        "from_channel": from_channel,
        "card": card,
    }


def ended(*, match_id: str, from_id: int, reason: str) -> Event:
    return {"type": "videochat.ended", "match_id": match_id, "from_id": from_id, "reason": reason}


def signal(*, match_id: str, from_id: int, kind: str, data: dict[str, Any]) -> Event:
    return {
        "type": "videochat.signal",
        "match_id": match_id,
        "from_id": from_id,
        "kind": kind,
        "data": data,
    }


def chat(*, match_id: str, from_id: int, text: str, lang: str) -> Event:
    return {
        "type": "videochat.chat",
        "match_id": match_id,
        "from_id": from_id,
        "text": text,
        "lang": lang,
    }


def banned(*, ban_id: int) -> Event:
    return {"type": "videochat.banned", "ban_id": ban_id}


def replaced() -> Event:
    """To an older socket of the same user: a newer one took over."""
    return {"type": "videochat.replaced"}
