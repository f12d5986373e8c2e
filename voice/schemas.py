"""The CBLINE socket protocol (docs/protocols/cbline.md) as pydantic models: every message in
and out, and the binary packet header."""

from __future__ import annotations

import struct
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from realtime.schemas import Inbound, Outbound

ChannelId = Annotated[int, Field(ge=1, le=2**53)]
TxId = Annotated[int, Field(ge=1, le=2**32 - 1)]  # the header carries it as a u32
UserId = Annotated[int, Field(ge=1, le=2**53)]


# --- client -> server
class ChannelJoin(Inbound):
    type: Literal["channel.join"]
    channel_id: ChannelId
    password: Annotated[str, Field(max_length=128)] | None = None


class ChannelLeave(Inbound):
    type: Literal["channel.leave"]


class LocationSet(Inbound):
    type: Literal["location.set"]
    lat: Annotated[float, Field(ge=-85.05, le=85.05, allow_inf_nan=False)]  # GEO's limits
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class LocationClear(Inbound):
    type: Literal["location.clear"]


class FloorRequest(Inbound):
    type: Literal["floor.request"]
    mode: Literal["webcodecs", "mediarecorder"]


class FloorRelease(Inbound):
    type: Literal["floor.release"]
    tx_id: TxId


class TxFetch(Inbound):
    type: Literal["tx.fetch"]
    tx_id: TxId


Minutes = Annotated[int, Field(ge=0, le=60 * 24 * 366)]  # 0 = forever


class ModMute(Inbound):
    type: Literal["mod.mute"]
    user_id: UserId
    minutes: Minutes = 0


class ModUnmute(Inbound):
    type: Literal["mod.unmute"]
    user_id: UserId


class ModKick(Inbound):
    type: Literal["mod.kick"]
    user_id: UserId


class ModBan(Inbound):
    type: Literal["mod.ban"]
    user_id: UserId
    minutes: Minutes = 0


class ModUnban(Inbound):
    type: Literal["mod.unban"]
    user_id: UserId


class ModBans(Inbound):
    """A moderator asks for the channel's bans in force (answer: `mod.bans`)."""

    type: Literal["mod.bans"]


VoiceInbound = Annotated[
    ChannelJoin
    | ChannelLeave
    | LocationSet
    | LocationClear
    | FloorRequest
    | FloorRelease
    | TxFetch
    | ModMute
    | ModUnmute
    | ModKick
    | ModBan
    | ModUnban
    | ModBans,
    Field(discriminator="type"),
]
inbound_adapter: TypeAdapter[VoiceInbound] = TypeAdapter(VoiceInbound)


# --- server -> client
class ChannelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    name: str
    description: str
    range_km: int
    is_protected: bool


class Member(BaseModel):
    """What channel members see of each other: never coordinates."""

    model_config = ConfigDict(extra="forbid")
    user_id: int
    nickname: str
    description: str
    country: str
    country_name: str
    flag: str
    is_moderator: bool
    muted: bool


class Me(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int
    has_location: bool
    range_km: int
    is_moderator: bool


class Talker(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int | None  # None (and no nickname) when the joiner is out of the talker's range
    nickname: str
    tx_id: int
    in_range: bool = True


class RecentTx(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tx_id: int
    user_id: int
    nickname: str
    started_at: int
    duration_ms: int


class ChannelJoined(Outbound):
    type: Literal["channel.joined"] = "channel.joined"
    channel: ChannelInfo
    members: list[Member]
    member_count: int  # everyone present; `members` may list only part of a big channel
    me: Me
    talker: Talker | None
    recent: list[RecentTx]


class ChannelLeft(Outbound):
    type: Literal["channel.left"] = "channel.left"
    channel_id: int


class MemberJoined(Outbound):
    type: Literal["member.joined"] = "member.joined"
    member: Member


class MemberUpdated(Outbound):
    type: Literal["member.updated"] = "member.updated"
    member: Member


class MemberLeft(Outbound):
    type: Literal["member.left"] = "member.left"
    user_id: int


class LocationOk(Outbound):
    type: Literal["location.ok"] = "location.ok"
    has_location: bool
    country: str
    country_name: str
    flag: str


class FloorGranted(Outbound):
    type: Literal["floor.granted"] = "floor.granted"
    tx_id: int
    max_ms: int
    packet_ms: int


class FloorTaken(Outbound):
    """To listeners in the talker's range; members out of range get `in_range` false and
    neither the talker's id nor name (they must not learn who talks where they cannot hear)."""

    type: Literal["floor.taken"] = "floor.taken"
    tx_id: int
    user_id: int | None
    nickname: str
    started_at: int
    mode: str
    in_range: bool = True


ReleaseReason = Literal["released", "disconnected", "timeout", "moderated"]


class FloorReleased(Outbound):
    type: Literal["floor.released"] = "floor.released"
    tx_id: int
    user_id: int | None  # None for members out of the talker's range
    duration_ms: int
    reason: ReleaseReason
    in_range: bool = True


class TxReplay(Outbound):
    type: Literal["tx.replay"] = "tx.replay"
    tx_id: int
    user_id: int
    nickname: str
    mode: str


class TxReplayEnd(Outbound):
    type: Literal["tx.replay.end"] = "tx.replay.end"
    tx_id: int
    user_id: int
    nickname: str
    mode: str


class ModOk(Outbound):
    type: Literal["mod.ok"] = "mod.ok"
    action: Literal["muted", "unmuted", "kicked", "banned", "unbanned"]
    user_id: int


class BannedMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int
    nickname: str
    until: int | None  # ms since epoch; None = until a moderator lifts it


class BanList(Outbound):
    type: Literal["mod.bans"] = "mod.bans"
    bans: list[BannedMember]


class Moderated(Outbound):
    type: Literal["moderated"] = "moderated"
    action: Literal["muted", "unmuted", "kicked", "banned", "unbanned"]
    until: int | None  # ms since epoch; None = forever (or a kick)


# --- binary audio packet: the 16-byte header (big-endian) before the payload.
HEADER = struct.Struct(">BBHId")
KIND_WEBCODECS = 1
KIND_MEDIARECORDER = 2
FLAG_LAST = 0x01


class PacketHeader(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal[1, 2]
    flags: Annotated[int, Field(ge=0, le=FLAG_LAST)]  # no other bit is defined
    seq: Annotated[int, Field(ge=0, le=65535)]
    tx_id: TxId
    capture_ts: Annotated[float, Field(allow_inf_nan=False)]

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    @classmethod
    def parse(cls, data: bytes) -> PacketHeader:
        """ValueError (pydantic's ValidationError is one) when the header is not valid."""
        if len(data) <= HEADER.size:
            raise ValueError("a packet is a 16-byte header and a payload")
        kind, flags, seq, tx_id, capture_ts = HEADER.unpack_from(data)
        header = cls(kind=kind, flags=flags, seq=seq, tx_id=tx_id, capture_ts=capture_ts)
        if kind == KIND_WEBCODECS:
            _check_opus_frames(data)
        return header

    def pack(self) -> bytes:
        return HEADER.pack(self.kind, self.flags, self.seq, self.tx_id, self.capture_ts)


def _check_opus_frames(data: bytes) -> None:
    """Kind 1 is a run of (u16 length, Opus bytes) that ends exactly at the packet's end: a
    packet that does not would fail in every listener's decoder, so it is refused here."""
    offset, end = HEADER.size, len(data)
    while offset < end:
        if offset + 2 > end:
            raise ValueError("truncated Opus frame length")
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2 + length
        if length == 0 or offset > end:
            raise ValueError("Opus frame length does not match the packet")
