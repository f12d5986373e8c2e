"""Every CallsApp message in and out, as pydantic models: the HTTP bodies of the Matrix
subset (docs/protocols/callsapp.md; field names are the spec's) and the sync socket's
frames. Key objects are signed by the client, so they are kept exactly as sent
(`extra="allow"`), checked only for the fields the server routes by."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from realtime.schemas import Ack, Hello, Inbound, Outbound

Json = dict[str, Any]
Id = Annotated[str, Field(min_length=1, max_length=255)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Signed(BaseModel):
    """A signed key object: whatever the client signed, with its signatures."""

    model_config = ConfigDict(extra="allow")
    signatures: dict[str, dict[str, str]] = Field(default_factory=dict)


class DeviceKeysBody(Signed):
    user_id: Id
    device_id: Id
    algorithms: list[str]
    keys: dict[str, str]


class KeysUpload(Body):
    device_keys: DeviceKeysBody | None = None
    one_time_keys: dict[Id, Json | str] | None = None
    fallback_keys: dict[Id, Json | str] | None = None


class KeysQuery(Body):
    device_keys: Annotated[dict[Id, list[Id]], Field(max_length=1000)]
    timeout: int | None = None


class KeysClaim(Body):
    one_time_keys: dict[Id, dict[Id, Id]]
    timeout: int | None = None


class CrossSigningKeyBody(Signed):
    user_id: Id
    usage: list[str]
    keys: dict[str, str]


class SigningKeysUpload(Body):
    master_key: CrossSigningKeyBody | None = None
    self_signing_key: CrossSigningKeyBody | None = None
    user_signing_key: CrossSigningKeyBody | None = None


class SendToDevice(Body):
    messages: dict[Id, dict[Id, Json]]


class CreateRoom(Body):
    name: Annotated[str, Field(max_length=100)] = ""
    invite: Annotated[list[Id], Field(max_length=255)] = Field(default_factory=list)
    is_direct: bool = False


class UserIdBody(Body):
    user_id: Id
    reason: Annotated[str, Field(max_length=500)] | None = None


class RoomName(Body):
    name: Annotated[str, Field(max_length=100)]


class PowerLevels(Body):
    users: dict[Id, int]


class Redact(Body):
    reason: Annotated[str, Field(max_length=500)] | None = None
    # Our addition: the message's attachments (mxc URIs). The server cannot read the
    # ciphertext, so the client names them; its own uploads to the room are deleted.
    media: Annotated[list[Id], Field(max_length=20)] = []


class DirectorySearch(Body):
    search_term: Annotated[str, Field(min_length=1, max_length=254)]
    limit: int | None = None


class IgnoredUsers(Body):
    ignored_users: Annotated[dict[Id, Json], Field(max_length=10000)]


class PrivacySettings(Body):
    read_receipts: bool | None = None
    online_status: bool | None = None


# --- The sync socket (/ws/messaging/): hello and ack are the durable stream's.
class SocketSend(Inbound):
    """PUT rooms/{room_id}/send/m.room.encrypted/{txn_id} over the sync socket: the same
    service, the same idempotency key (a resend answers the same event_id)."""

    type: Literal["send"]
    room_id: Id
    txn_id: Id
    content: Json
    # `ack{seq}` riding on the send (the client's delayed ack): one frame, not two.
    ack: Annotated[int, Field(ge=0)] | None = None


MessagingInbound = Hello | Ack | SocketSend


class Sent(Outbound):
    """The answer to `send`: stored as `event_id`. A refusal is an error frame whose `ref`
    is the txn_id."""

    type: Literal["sent"] = "sent"
    txn_id: str
    event_id: str


class SyncFrame(Outbound):
    """A Matrix /sync-shaped batch. `seq` is null for a frame that needs no ack."""

    type: Literal["sync"] = "sync"
    seq: int | None = None
    sync: Json


# --- Communities and public accounts (HTTP bodies and the sync socket's pushes).
POST_MAX_CHARS = 4000
CommunityKind = Literal["community", "public"]
CommunityAccess = Literal["open", "approval"]
CommunityName = Annotated[str, Field(min_length=1, max_length=80)]


class CommunityCreate(Body):
    name: CommunityName
    description: Annotated[str, Field(max_length=500)] = ""
    kind: CommunityKind = "community"
    access: CommunityAccess = "open"


class CommunityJoinByName(Body):
    name: CommunityName


class CommunityPostCreate(Body):
    text: Annotated[str, Field(min_length=1, max_length=POST_MAX_CHARS)]


class CommunityMute(Body):
    muted: bool


class CommunityAccessSet(Body):
    access: CommunityAccess


class CommunityMemberAction(Body):
    action: Literal["approve", "refuse", "remove", "make_admin"]


class PostJson(Outbound):
    post_id: int
    author: str
    author_name: str
    text: str
    created_at: str
    likes: int
    liked: bool


class CommunityPosted(Outbound):
    """A new post, to members who have not muted the community."""

    type: Literal["community.post"] = "community.post"
    community_id: str
    post: PostJson


class CommunityPostDeleted(Outbound):
    type: Literal["community.post_deleted"] = "community.post_deleted"
    community_id: str
    post_id: int


class CommunityLikes(Outbound):
    type: Literal["community.likes"] = "community.likes"
    community_id: str
    post_id: int
    likes: int


# --- Bots (HTTP bodies of the page's API, the Bot API's parameters, the socket's push).
BOT_TEXT_MAX_CHARS = 4096
BotName = Annotated[str, Field(min_length=1, max_length=64)]
BotDescription = Annotated[str, Field(max_length=512)]


class BotCreate(Body):
    # The username's rules are the service's (its error says which one failed).
    username: Annotated[str, Field(max_length=100)]
    name: BotName
    description: BotDescription = ""


class BotEdit(Body):
    name: BotName
    description: BotDescription = ""


class BotChatSend(Body):
    text: Annotated[str, Field(min_length=1, max_length=BOT_TEXT_MAX_CHARS)]


class BotChatBlock(Body):
    blocked: bool


class BotMessageJson(Outbound):
    message_id: int
    from_bot: bool
    text: str
    created_at: str


class BotMessaged(Outbound):
    """A message in a bot chat, to the user's CallsApp sockets."""

    type: Literal["bot.message"] = "bot.message"
    bot: str  # its username
    message: BotMessageJson


class BotApiParams(BaseModel):
    """Bot API parameters: JSON body or query string, unknown ones ignored (Telegram's
    clients send many). Each method's own model says what it needs."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GetUpdates(BotApiParams):
    offset: Annotated[int, Field(ge=0)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 100
    timeout: Annotated[int, Field(ge=0)] = 0


class SendMessage(BotApiParams):
    chat_id: int
    text: str


class SetWebhook(BotApiParams):
    url: Annotated[str, Field(max_length=2048)]
    # Telegram's alphabet: it travels in a header.
    secret_token: Annotated[str, Field(max_length=256, pattern=r"^[A-Za-z0-9_-]*$")] = ""
