"""Messages every socket understands, whatever the product, and the error frame."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Inbound(BaseModel):
    """Base of every client message: unknown fields are refused, `ref` is echoed in errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ref: Annotated[str, Field(max_length=64)] | None = None


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorFrame(Outbound):
    type: Literal["error"] = "error"
    code: str
    detail: str
    ref: str | None = None


class Ping(Inbound):
    type: Literal["ping"]


class Pong(Outbound):
    type: Literal["pong"] = "pong"


class Watch(Inbound):
    """Presence socket: follow the online status of these users."""

    type: Literal["presence.watch"]
    user_ids: Annotated[list[int], Field(max_length=500)]


class PresenceStatus(Outbound):
    type: Literal["presence"] = "presence"
    statuses: dict[int, bool]


PresenceInbound = Watch


# --- The durable stream (docs/protocols/stream.md).
class Hello(Inbound):
    """(Re)connect: send everything after `last_seq` (0 for a new device)."""

    type: Literal["hello"]
    last_seq: Annotated[int, Field(ge=0)]


class Ack(Inbound):
    """Everything up to `seq` is stored by the client: the server may delete it."""

    type: Literal["ack"]
    seq: Annotated[int, Field(ge=0)]


class CaughtUp(Outbound):
    type: Literal["caught_up"] = "caught_up"
    seq: int
