"""Every video chat socket message, in and out: the protocol of docs/protocols/videochat.md
as pydantic models. Inbound models refuse unknown fields (realtime.schemas.Inbound)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from realtime.schemas import Inbound, Outbound

CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
LanguageCode = Annotated[str, Field(pattern=r"^([a-z]{2,3}([-_][A-Za-z0-9]{2,8})?)?$")]
MatchId = Annotated[str, Field(min_length=1, max_length=64)]
Gender = Literal["f", "m", "x", ""]


# --- client -> server
class ClientInfo(BaseModel):
    """Browser client data, read for the session and never written to SQL. Unknown keys are
    ignored rather than refused: browsers differ in what they can tell, and a newer client
    must not lose its session over an extra detail."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    browser: Annotated[str, Field(max_length=120)] = ""
    os: Annotated[str, Field(max_length=120)] = ""
    cameras: Annotated[int, Field(ge=0, le=64)] = 0
    microphones: Annotated[int, Field(ge=0, le=64)] = 0
    timezone: Annotated[str, Field(max_length=64)] = ""
    language: Annotated[str, Field(max_length=35)] = ""


class Hello(Inbound):
    type: Literal["hello"]
    client: ClientInfo = ClientInfo()
    gender: Gender = ""
    want_gender: Literal["f", "m"] | None = None
    want_country: CountryCode | None = None
    language: LanguageCode = ""
    translate_to: LanguageCode = ""


class QueueJoin(Inbound):
    type: Literal["queue.join"]


class QueueLeave(Inbound):
    type: Literal["queue.leave"]


class Next(Inbound):
    type: Literal["next"]
    # The match the user moved on from: a Next that crossed the server's own ending of it
    # (the partner left, and the user was already matched again) must not end the new one.
    match_id: MatchId | None = None


class SessionDescription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["offer", "answer"]
    sdp: str


class IceCandidate(BaseModel):
    """RTCIceCandidateInit; an empty candidate marks the end of candidates."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    candidate: Annotated[str, Field(max_length=1024)] = ""
    sdpMid: Annotated[str, Field(max_length=64)] | None = None  # WebRTC's names
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1024)] | None = None
    usernameFragment: Annotated[str, Field(max_length=256)] | None = None


class Signal(Inbound):
    type: Literal["signal"]
    match_id: MatchId
    kind: Literal["offer", "answer", "ice"]
    data: SessionDescription | IceCandidate

    @model_validator(mode="after")
    def _data_fits_kind(self) -> Signal:
        if self.kind == "ice":
            if not isinstance(self.data, IceCandidate):
                raise ValueError("an ice signal carries an RTCIceCandidateInit")
        elif not isinstance(self.data, SessionDescription) or self.data.type != self.kind:
            raise ValueError(f"an {self.kind} signal carries {{type: '{self.kind}', sdp}}")
        return self

    def sdp_bytes(self) -> int:
        return len(self.data.sdp.encode()) if isinstance(self.data, SessionDescription) else 0


class Chat(Inbound):
    type: Literal["chat"]
    match_id: MatchId
    text: Annotated[str, Field(min_length=1, max_length=500)]


VideochatInbound = TypeAdapter(
    Annotated[
        Hello | QueueJoin | QueueLeave | Next | Signal | Chat,
        Field(discriminator="type"),
    ]
)


# --- server -> client
class CountryCard(Outbound):
    country: str
    country_name: str
    flag: str


class IceServer(Outbound):
    urls: list[str]
    username: str | None = None
    credential: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: Any) -> dict[str, Any]:
        # RTCPeerConnection turns a null username into the string "null": leave it out.
        return {k: v for k, v in handler(self).items() if v is not None}


class Ready(Outbound):
    type: Literal["ready"] = "ready"
    me: CountryCard
    filters_allowed: bool
    ice_servers: list[IceServer]


class QueueWaiting(Outbound):
    type: Literal["queue.waiting"] = "queue.waiting"
    expected_wait_s: float | None


class QueueLeft(Outbound):
    type: Literal["queue.left"] = "queue.left"


class PartnerCard(Outbound):
    """What a user is shown about the partner: nothing that identifies the account."""

    country: str
    country_name: str
    flag: str
    gender: str
    language: str
    name: str


class MatchFound(Outbound):
    type: Literal["match.found"] = "match.found"
    match_id: str
    role: Literal["offer", "answer"]
    partner: PartnerCard


class MatchEnded(Outbound):
    type: Literal["match.ended"] = "match.ended"
    match_id: str
    reason: Literal["next", "left", "disconnected"]


class SignalOut(Outbound):
    type: Literal["signal"] = "signal"
    match_id: str
    kind: Literal["offer", "answer", "ice"]
    data: dict[str, Any]


class ChatOut(Outbound):
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, populate_by_name=True)
    type: Literal["chat"] = "chat"
    match_id: str
    sender: Literal["me", "partner"] = Field(alias="from")
    text: str
    lang: str
    translation: str | None
