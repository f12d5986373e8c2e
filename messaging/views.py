"""CallsApp's page and HTTP API. The page is a shell: everything on it runs in the browser
(the Matrix crypto SDK holds the keys). The API is the Matrix client-server subset of
docs/protocols/callsapp.md. Thin: authenticate (session + its device), parse with the
schema, call a service or a selector, answer JSON in the spec's shape (errors as
{"errcode", "error"})."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from pydantic import BaseModel, ValidationError

from accounts.selectors import hidden_presence_ids, meets_age_rule
from accounts.services import PRIVACY_LOCKED_REASON
from realtime import turn
from realtime.errors import ServiceError
from realtime.presence import online_ids_sync

from . import bots as bots_services
from . import communities as communities_services
from . import selectors, services
from .errors import not_found, under_age
from .ids import mxid, user_pk
from .schemas import (
    BotChatBlock,
    BotChatSend,
    BotCreate,
    BotEdit,
    CommunityAccessSet,
    CommunityCreate,
    CommunityJoinByName,
    CommunityMemberAction,
    CommunityMute,
    CommunityPostCreate,
    CreateRoom,
    DirectorySearch,
    IgnoredUsers,
    KeysClaim,
    KeysQuery,
    KeysUpload,
    PowerLevels,
    PrivacySettings,
    Redact,
    RoomName,
    SendToDevice,
    SigningKeysUpload,
    UserIdBody,
)

View = Callable[..., Any]


def app(request: HttpRequest) -> HttpResponse:
    """/messaging/: sign-in page for visitors, the age notice under CallsApp's age rule (10),
    otherwise the messenger, which gets its own ids from `account/whoami`."""
    user = request.user
    if not user.is_authenticated:
        return render(request, "messaging/login.html", {"next": request.get_full_path()})
    if not meets_age_rule(user, selectors.AGE_RULE):  # type: ignore[arg-type]
        return render(request, "messaging/age_restricted.html", status=403)
    context = {
        # The EEA under-16 lock: the settings panel shows them off, disabled, and why.
        "privacy_locked": selectors.privacy_settings(user)["locked"],  # type: ignore[arg-type]
        "privacy_locked_reason": PRIVACY_LOCKED_REASON,
    }
    return render(request, "messaging/app.html", context)


def _uid(request: HttpRequest) -> int:
    return int(request.user.pk or 0)


def error(status: int, errcode: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"errcode": errcode, "error": message, **extra}, status=status)


def endpoint(
    *methods: str, schema: type[BaseModel] | None = None, raw: bool = False
) -> Callable[[View], View]:
    """Method check, session + device authentication, JSON body parsing and validation,
    ServiceError -> the spec's error JSON. The view gets (request, body, **url kwargs)."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def inner(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error(405, "M_UNRECOGNIZED", f"use {' or '.join(methods)}")
            device = getattr(request, "device", None)
            if not request.user.is_authenticated or device is None:
                return error(401, "M_UNKNOWN_TOKEN", "sign in (this session has no device)")
            if not meets_age_rule(request.user, selectors.AGE_RULE):  # type: ignore[arg-type]
                refusal = under_age()
                return error(refusal.status, refusal.code, refusal.detail)
            body: Any = None
            if not raw and request.method in ("POST", "PUT"):
                parsed = _parse(request, schema)
                if isinstance(parsed, JsonResponse):
                    return parsed
                body = parsed
            try:
                result = view(request, body, **kwargs)
            except ServiceError as exc:
                extra = {}
                if hasattr(exc, "retry_after_ms"):
                    extra["retry_after_ms"] = exc.retry_after_ms
                code = exc.code if exc.code.startswith("M_") else "M_UNKNOWN"
                return error(exc.status, code, exc.detail, **extra)
            if isinstance(result, HttpResponse):
                return result
            return JsonResponse(result, safe=False)

        return inner

    return wrap


def _parse(request: HttpRequest, schema: type[BaseModel] | None) -> Any:
    length = int(request.headers.get("Content-Length") or 0)
    if length > settings.MESSAGING_MAX_REQUEST_BYTES:
        return error(413, "M_TOO_LARGE", "request body too large")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "M_NOT_JSON", "body is not JSON")
    if not isinstance(data, dict):
        return error(400, "M_BAD_JSON", "body must be a JSON object")
    if schema is None:
        return data
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return error(400, "M_BAD_JSON", f"{where}: {first['msg']}")


# --- identity
@endpoint("GET")
def whoami(request: HttpRequest, body: None) -> Any:
    return {"user_id": mxid(_uid(request)), "device_id": request.device.device_id}  # type: ignore[attr-defined]


@endpoint("GET")
def turn_server(request: HttpRequest, body: None) -> Any:
    """ICE servers for a call (Matrix's voip/turnServer): the relay video chat uses too."""
    return turn.turn_server(user_id=_uid(request))


@endpoint("GET")
def devices(request: HttpRequest, body: None) -> Any:
    return selectors.own_devices(request.user)  # type: ignore[arg-type]


# --- keys
@endpoint("POST", schema=KeysUpload)
def keys_upload(request: HttpRequest, body: KeysUpload) -> Any:
    return services.keys_upload(
        device=request.device,  # type: ignore[attr-defined]
        device_keys=body.device_keys,
        one_time_keys=body.one_time_keys,
        fallback_keys=body.fallback_keys,
    )


@endpoint("POST", schema=KeysQuery)
def keys_query(request: HttpRequest, body: KeysQuery) -> Any:
    return selectors.keys_query(user=request.user, wanted=body.device_keys)  # type: ignore[arg-type]


@endpoint("POST", schema=KeysClaim)
def keys_claim(request: HttpRequest, body: KeysClaim) -> Any:
    return services.keys_claim(user=request.user, wanted=body.one_time_keys)  # type: ignore[arg-type]


@endpoint("POST", schema=SigningKeysUpload)
def signing_keys_upload(request: HttpRequest, body: SigningKeysUpload) -> Any:
    services.signing_keys_upload(user=request.user, body=body)  # type: ignore[arg-type]
    return {}


@endpoint("POST")
def signatures_upload(request: HttpRequest, body: dict[str, Any]) -> Any:
    return services.signatures_upload(user=request.user, body=body)  # type: ignore[arg-type]


# --- to-device
@endpoint("PUT", schema=SendToDevice)
def send_to_device(request: HttpRequest, body: SendToDevice, event_type: str, txn_id: str) -> Any:
    return services.to_device_send(
        device=request.device,  # type: ignore[attr-defined]
        event_type=event_type,
        txn_id=txn_id,
        messages=body.messages,
    )


# --- rooms
@endpoint("POST", schema=CreateRoom)
def create_room(request: HttpRequest, body: CreateRoom) -> Any:
    room = services.room_create(
        creator=request.user,  # type: ignore[arg-type]
        name=body.name,
        invite=body.invite,
        is_direct=body.is_direct,
    )
    return {"room_id": room.room_id}


@endpoint("GET")
def joined_rooms(request: HttpRequest, body: None) -> Any:
    ids = request.user.room_memberships.values_list("room__room_id", flat=True)  # type: ignore[union-attr]
    return {"joined_rooms": list(ids)}


@endpoint("GET")
def room_state(request: HttpRequest, body: None, room_id: str) -> Any:
    room = selectors.room_of_member(room_id=room_id, user_id=_uid(request))
    return selectors.room_state(room)


@endpoint("GET")
def joined_members(request: HttpRequest, body: None, room_id: str) -> Any:
    room = selectors.room_of_member(room_id=room_id, user_id=_uid(request))
    return selectors.joined_members(room)


@endpoint("POST", schema=UserIdBody)
def invite(request: HttpRequest, body: UserIdBody, room_id: str) -> Any:
    services.room_invite(actor=request.user, room_id=room_id, user_mxid=body.user_id)  # type: ignore[arg-type]
    return {}


@endpoint("POST", schema=UserIdBody)
def kick(request: HttpRequest, body: UserIdBody, room_id: str) -> Any:
    services.room_kick(actor=request.user, room_id=room_id, user_mxid=body.user_id)  # type: ignore[arg-type]
    return {}


@endpoint("POST")
def leave(request: HttpRequest, body: Any, room_id: str) -> Any:
    services.room_leave(user=request.user, room_id=room_id)  # type: ignore[arg-type]
    return {}


@endpoint("PUT", schema=RoomName)
def room_name(request: HttpRequest, body: RoomName, room_id: str) -> Any:
    event_id = services.room_name_set(actor=request.user, room_id=room_id, name=body.name)  # type: ignore[arg-type]
    return {"event_id": event_id}


@endpoint("PUT", schema=PowerLevels)
def power_levels(request: HttpRequest, body: PowerLevels, room_id: str) -> Any:
    event_id = services.room_admins_set(actor=request.user, room_id=room_id, users=body.users)  # type: ignore[arg-type]
    return {"event_id": event_id}


@endpoint("PUT")
def send_event(
    request: HttpRequest, body: dict[str, Any], room_id: str, event_type: str, txn_id: str
) -> Any:
    return services.room_event_send(
        device=request.device,  # type: ignore[attr-defined]
        room_id=room_id,
        event_type=event_type,
        txn_id=txn_id,
        content=body,
    )


@endpoint("PUT", schema=Redact)
def redact(request: HttpRequest, body: Redact, room_id: str, event_id: str, txn_id: str) -> Any:
    return services.room_event_redact(
        device=request.device,  # type: ignore[attr-defined]
        room_id=room_id,
        event_id=event_id,
        txn_id=txn_id,
        reason=body.reason,
        media=body.media,
    )


@endpoint("POST")
def receipt(request: HttpRequest, body: Any, room_id: str, event_id: str) -> Any:
    services.receipt_send(device=request.device, room_id=room_id, event_id=event_id)  # type: ignore[attr-defined]
    return {}


@endpoint("GET")
def undelivered(request: HttpRequest, body: None, room_id: str) -> Any:
    room = selectors.room_of_member(room_id=room_id, user_id=_uid(request))
    return {"events": selectors.undelivered(user=request.user, room=room)}  # type: ignore[arg-type]


# --- people
@endpoint("POST", schema=DirectorySearch)
def directory_search(request: HttpRequest, body: DirectorySearch) -> Any:
    results = selectors.directory_search(user=request.user, term=body.search_term)  # type: ignore[arg-type]
    return {"results": results, "limited": False}


@endpoint("GET", "PUT", schema=IgnoredUsers)
def ignored_users(request: HttpRequest, body: IgnoredUsers | None, user_id: str) -> Any:
    if user_pk(user_id) != request.user.pk:
        raise ServiceError("M_FORBIDDEN", "you can only read or change your own list", status=403)
    if body is not None:
        services.ignored_users_set(user=request.user, ignored=body.ignored_users)  # type: ignore[arg-type]
        return {}
    return selectors.ignored_users(request.user)  # type: ignore[arg-type]


@endpoint("GET")
def presence_status(request: HttpRequest, body: None, user_id: str) -> Any:
    pk = user_pk(user_id)
    # Not a contact, blocked either way, or deleted: the same answer as a missing user.
    if pk is None or pk not in selectors.presence_audience(_uid(request), [pk]):
        raise not_found("no such user among your contacts")
    visible = pk not in hidden_presence_ids([pk]) and pk in online_ids_sync([pk])
    return {"presence": "online" if visible else "offline"}


@endpoint("GET", "PUT", schema=PrivacySettings)
def privacy_settings(request: HttpRequest, body: PrivacySettings | None) -> Any:
    if body is None:
        return selectors.privacy_settings(request.user)  # type: ignore[arg-type]
    return services.privacy_settings_set(
        user=request.user,  # type: ignore[arg-type]
        read_receipts=body.read_receipts,
        online_status=body.online_status,
    )


# --- media
@endpoint("POST", raw=True)
def media_upload(request: HttpRequest, body: None) -> Any:
    room_id = request.GET.get("room_id", "")
    limit = settings.MESSAGING_MEDIA_MAX_BYTES
    if int(request.headers.get("Content-Length") or 0) > limit:
        return error(413, "M_TOO_LARGE", f"uploads are limited to {limit} bytes")
    # Read the stream ourselves: request.body refuses anything over the form-data limit.
    data = request.read(limit + 1)
    if len(data) > limit:
        return error(413, "M_TOO_LARGE", f"uploads are limited to {limit} bytes")
    uri = services.media_upload(device=request.device, room_id=room_id, data=data)  # type: ignore[attr-defined]
    return {"content_uri": uri}


@endpoint("GET")
def media_download(request: HttpRequest, body: None, server_name: str, media_id: str) -> Any:
    data = services.media_fetch(device=request.device, server_name=server_name, media_id=media_id)  # type: ignore[attr-defined]
    return HttpResponse(data, content_type="application/octet-stream")


# --- communities and public accounts (plain, not E2E: messaging.communities)
@endpoint("GET", "POST", schema=CommunityCreate)
def communities(request: HttpRequest, body: CommunityCreate | None) -> Any:
    if body is None:
        return selectors.communities_of(_uid(request))
    c = communities_services.community_create(
        creator=request.user,  # type: ignore[arg-type]
        name=body.name,
        description=body.description,
        kind=body.kind,
        access=body.access,
    )
    return selectors.community_of_viewer(c, _uid(request))


@endpoint("POST", schema=CommunityJoinByName)
def community_join_by_name(request: HttpRequest, body: CommunityJoinByName) -> Any:
    c = communities_services.community_join_by_name(user=request.user, name=body.name)  # type: ignore[arg-type]
    return selectors.community_of_viewer(c, _uid(request))


@endpoint("GET")
def community(request: HttpRequest, body: None, community_id: str) -> Any:
    c = selectors.community_readable(community_id=community_id, user_id=_uid(request))
    return selectors.community_view(c, _uid(request))


@endpoint("POST")
def community_join(request: HttpRequest, body: Any, community_id: str) -> Any:
    c = communities_services.community_join(user=request.user, community_id=community_id)  # type: ignore[arg-type]
    return selectors.community_of_viewer(c, _uid(request))


@endpoint("POST")
def community_leave(request: HttpRequest, body: Any, community_id: str) -> Any:
    communities_services.community_leave(user=request.user, community_id=community_id)  # type: ignore[arg-type]
    return {}


@endpoint("POST", schema=CommunityPostCreate)
def community_posts(request: HttpRequest, body: CommunityPostCreate, community_id: str) -> Any:
    return communities_services.post_create(
        author=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        text=body.text,
    )


@endpoint("DELETE")
def community_post(request: HttpRequest, body: None, community_id: str, post_id: int) -> Any:
    communities_services.post_delete(
        actor=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        post_id=post_id,
    )
    return {}


@endpoint("PUT", "DELETE")
def community_like(request: HttpRequest, body: Any, community_id: str, post_id: int) -> Any:
    return communities_services.post_like_set(
        user=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        post_id=post_id,
        liked=request.method == "PUT",
    )


@endpoint("PUT", schema=CommunityMute)
def community_mute(request: HttpRequest, body: CommunityMute, community_id: str) -> Any:
    c = communities_services.community_mute_set(
        user=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        muted=body.muted,
    )
    return selectors.community_of_viewer(c, _uid(request))


@endpoint("PUT", schema=CommunityAccessSet)
def community_access(request: HttpRequest, body: CommunityAccessSet, community_id: str) -> Any:
    c = communities_services.community_access_set(
        actor=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        access=body.access,
    )
    return selectors.community_of_viewer(c, _uid(request))


@endpoint("GET")
def community_members(request: HttpRequest, body: None, community_id: str) -> Any:
    c = selectors.community_of_admin(community_id=community_id, user_id=_uid(request))
    return selectors.community_people(c)


@endpoint("POST", schema=CommunityMemberAction)
def community_member(
    request: HttpRequest, body: CommunityMemberAction, community_id: str, user_id: str
) -> Any:
    communities_services.community_member_act(
        actor=request.user,  # type: ignore[arg-type]
        community_id=community_id,
        user_mxid=user_id,
        action=body.action,
    )
    return {}


# --- bots, the owner's and the user's side (plain, not E2E: messaging.bots); the bots' own
# HTTP API is messaging.bot_api
@endpoint("GET", "POST", schema=BotCreate)
def bots(request: HttpRequest, body: BotCreate | None) -> Any:
    if body is None:
        return selectors.bots_of(_uid(request))
    bot, token = bots_services.bot_create(
        owner=request.user,  # type: ignore[arg-type]
        username=body.username,
        name=body.name,
        description=body.description,
    )
    return {**selectors.bot_json(bot, chats=0), "token": token}  # shown this once


@endpoint("PUT", "DELETE", schema=BotEdit)
def bot(request: HttpRequest, body: BotEdit | None, bot_id: int) -> Any:
    if body is None:
        bots_services.bot_delete(owner=request.user, bot_id=bot_id)  # type: ignore[arg-type]
        return {}
    b = bots_services.bot_edit(
        owner=request.user,  # type: ignore[arg-type]
        bot_id=bot_id,
        name=body.name,
        description=body.description,
    )
    return selectors.bot_json(b, chats=b.chats.count())


@endpoint("POST")
def bot_token(request: HttpRequest, body: Any, bot_id: int) -> Any:
    return {"token": bots_services.bot_token_regenerate(owner=request.user, bot_id=bot_id)}  # type: ignore[arg-type]


@endpoint("GET")
def bot_chats(request: HttpRequest, body: None) -> Any:
    return selectors.bot_chats_of(_uid(request))


@endpoint("GET", "DELETE")
def bot_chat(request: HttpRequest, body: None, username: str) -> Any:
    if request.method == "DELETE":
        bots_services.bot_chat_delete(user=request.user, username=username)  # type: ignore[arg-type]
        return {}
    return selectors.bot_chat_view(selectors.bot_by_username(username), _uid(request))


@endpoint("POST", schema=BotChatSend)
def bot_chat_messages(request: HttpRequest, body: BotChatSend, username: str) -> Any:
    return bots_services.user_message_send(
        user=request.user,  # type: ignore[arg-type]
        username=username,
        text=body.text,
    )


@endpoint("PUT", schema=BotChatBlock)
def bot_chat_block(request: HttpRequest, body: BotChatBlock, username: str) -> Any:
    return bots_services.bot_chat_block_set(
        user=request.user,  # type: ignore[arg-type]
        username=username,
        blocked=body.blocked,
    )
