"""Real-time events CBLINE emits on the channel layer (control only: audio bypasses it through
the relay). Group names are in keys.py; socket frames in schemas.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from realtime.events import Event

from .schemas import Member


class MemberAnnounced(Event):
    """A socket announces its member card to its channel; `origin` is its channel name."""

    origin: str
    member: Member


class MemberJoined(MemberAnnounced):
    type: Literal["voice.member.joined"] = "voice.member.joined"


class Joiner(BaseModel):
    origin: str  # the joining socket's channel name (it is not told of itself)
    member: Member
    # The member.joined frame, rendered once by the joiner's process for every member's
    # socket to send as is ("": render it from `member`, as a previous release's process).
    frame: str = ""


class MembersJoined(Event):
    """Joins of one process that came together, in one group event (voice.announce)."""

    type: Literal["voice.members.joined"] = "voice.members.joined"
    joined: list[Joiner]


class MemberUpdated(MemberAnnounced):
    type: Literal["voice.member.updated"] = "voice.member.updated"


class MemberLeft(Event):
    """The user's last socket in the channel left (or its process died)."""

    type: Literal["voice.member.left"] = "voice.member.left"
    user_id: int


class Moderated(Event):
    """To the target's CBLINE sockets: a moderator acted; `until` in epoch ms, or None."""

    type: Literal["voice.moderated"] = "voice.moderated"
    channel_id: int
    action: str
    until: int | None


class IdentityChanged(Event):
    """The user's nickname or description changed: each socket re-announces itself."""

    type: Literal["voice.identity.changed"] = "voice.identity.changed"


class LocationChanged(Event):
    """The user started or stopped sharing a location: each socket re-announces itself (its
    country is shown only while they share one)."""

    type: Literal["voice.location.changed"] = "voice.location.changed"


class ChannelClosed(Event):
    """Staff deleted the channel: every socket in it leaves (its talker loses the floor)."""

    type: Literal["voice.channel.closed"] = "voice.channel.closed"
    channel_id: int
