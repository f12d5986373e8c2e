"""The base every product's WebSocket consumer extends.

It gives all of them the same behaviour at the edge: a socket is authenticated as (user,
device, session) from what the ASGI auth middleware put in the scope, and closed with 4401
without all three; each text frame is size-checked, rate-limited per user in Redis, parsed
as JSON and validated against the consumer's pydantic schema before a handler `on_<type>`
sees it; bad input gets an error frame and the connection stays up; a `socket.close` event
sent to the socket's session, device or user group closes it with the code it names
(realtime.services).
Subclasses implement `on_connect`, handlers named after message types, and `on_binary` if
they take binary frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import redis.exceptions
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django import db
from django.conf import settings
from pydantic import BaseModel, TypeAdapter, ValidationError

from . import admission, closecodes, liveness, metrics, presence, services
from .errors import ServiceError
from .events import PresenceUpdate, send_now
from .hooks import SHOW_ONLINE_SCOPE_KEY, shown_to
from .hooks import presence as presence_hooks
from .keys import device_group, presence_group, rate_key, session_group, user_group
from .layers import LeanRedisChannelLayer
from .opening import Opening
from .ratelimit import allow_async
from .schemas import ErrorFrame, Pong, PresenceStatus, Watch

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = closecodes.UNAUTHENTICATED
CLOSE_LOGGED_OUT = closecodes.LOGGED_OUT
CLOSE_FORBIDDEN = closecodes.FORBIDDEN
# Redis (or the database) lost: the socket's groups and live state may be gone with it
# (a restart, or this process missed its liveness beat and was cleaned up as dead), so it
# is closed rather than left deaf; the client reconnects with backoff and jitter.
CLOSE_RECONNECT = closecodes.TRY_AGAIN
# Redis or the database unreachable for a moment: transient, so the client comes back.
_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    db.OperationalError,
    db.InterfaceError,
)


def scope_identity(scope: dict[str, Any]) -> tuple[Any, Any, str] | None:
    """(user, device, session key) when all three are there and agree, else None."""
    user, device, session_key = scope.get("user"), scope.get("device"), scope.get("session_key")
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if device is None or not session_key or getattr(device, "user_id", None) != user.pk:
        return None
    if getattr(device, "session_key", None) != session_key:
        return None
    return user, device, session_key


def client_ip(scope: dict[str, Any]) -> str | None:
    """The client's address. Behind the proxy the ASGI server is run with proxy headers from
    trusted addresses only (uvicorn --proxy-headers --forwarded-allow-ips, daphne
    --proxy-headers), which puts the forwarded client here: a header the client sent itself
    is never believed (as for login throttling and CBLINE's connection log)."""
    client = scope.get("client") or [None]
    return str(client[0]) if client[0] else None


def _wake(woken: asyncio.Future[None], _done: asyncio.Future[Any]) -> None:
    if not woken.done():
        woken.set_result(None)


async def dispatch_from(
    sources: Sequence[Callable[[], Awaitable[Any]]], dispatch: Callable[[Any], Awaitable[None]]
) -> None:
    """Channels' await_many_dispatch: each source's next message to `dispatch`, in turn, the
    source asked again only once its message is handled. It waits on one future instead of
    asyncio.wait's set, closure and frames: an idle socket waits here for its whole life."""
    loop = asyncio.get_running_loop()
    pending = [asyncio.ensure_future(source()) for source in sources]
    try:
        while True:
            if not any(future.done() for future in pending):
                woken: asyncio.Future[None] = loop.create_future()
                wake = functools.partial(_wake, woken)
                for future in pending:
                    future.add_done_callback(wake)
                try:
                    await woken
                finally:
                    for future in pending:
                        future.remove_done_callback(wake)
            for i, future in enumerate(pending):
                if future.done():
                    message = future.result()
                    await dispatch(message)
                    pending[i] = asyncio.ensure_future(sources[i]())
    finally:
        for future in pending:
            future.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await future


async def presence_announce(
    user_id: int, *, online: bool, watchers: list[str] | None = None
) -> None:
    """The user came online or went offline, to whoever watches them: through the watchers'
    process subscriptions (realtime.layers), one round trip that finds nobody watching in a
    reconnect storm, where channels_redis' group_send took two, then a script per server
    (a storm's profile: 4 % of a server's CPU); none when the connect's own script read the
    `watchers` (realtime.opening). Each PUBLISH of a process goes in order, so a watcher
    sees a user's online and offline in the order they happened."""
    event = PresenceUpdate(user_id=user_id, online=online)
    layer = get_channel_layer()
    if isinstance(layer, LeanRedisChannelLayer):
        if watchers is None:
            await layer.group_send_direct(presence_group(user_id), event.model_dump(mode="json"))
        elif watchers:
            await layer.send_to_members(watchers, event.model_dump(mode="json"))
    else:  # another layer (tests may use the in-memory one)
        await send_now(presence_group(user_id), event)


async def _dropped(message: Any) -> None:
    """A closed socket's send (BaseConsumer.close)."""


def _unknown_type(data: dict[str, Any]) -> ServiceError:
    return ServiceError("unknown_type", f"unknown message type {data['type']!r}")


class BaseConsumer(AsyncWebsocketConsumer):
    # A TypeAdapter over the union of the product's inbound models, discriminated on "type".
    inbound: ClassVar[TypeAdapter[Any] | None] = None
    rate_scope: ClassVar[str] = "ws"
    max_text_bytes: ClassVar[int] = settings.WS_MAX_TEXT_FRAME_BYTES
    max_binary_bytes: ClassVar[int] = settings.WS_MAX_BINARY_FRAME_BYTES
    rate_capacity: ClassVar[int] = settings.WS_RATE_CAPACITY
    rate_per_second: ClassVar[float] = settings.WS_RATE_REFILL_PER_SECOND

    user_id: int | None = None
    device: Any = None  # accounts.Device, issued at login and bound to the session
    device_pk: int | None = None
    device_id = ""  # the device's public id (Matrix-style)
    session_key = ""
    show_online = False

    # --- lifecycle
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._serve(scope, receive, send)
        except _TRANSIENT as exc:
            # Unhandled, this closed the socket with 1011 and the client gave up.
            log.warning("closing a socket for a reconnect: %r", exc)
            with contextlib.suppress(Exception):
                await self.disconnect(CLOSE_RECONNECT)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_RECONNECT})
        finally:
            # realtime.layers: stop buffering for this channel (a receive that had already
            # got its message when the consumer stopped cannot tell the layer by a cancel).
            close_channel = getattr(self.channel_layer, "close_channel", None)
            if close_channel is not None and getattr(self, "channel_name", None):
                close_channel(self.channel_name)

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' AsyncConsumer.__call__, with the dispatch loop below."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources: list[Callable[[], Awaitable[Any]]] = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(functools.partial(self.channel_layer.receive, self.channel_name))
        with contextlib.suppress(StopConsumer):
            await dispatch_from(sources, self.dispatch)

    async def connect(self) -> None:
        place = admission.of(self.scope)
        try:
            await self._connect()
        finally:
            if place is not None:
                place.release()  # an open, idle socket holds no place (realtime.admission)

    async def _connect(self) -> None:
        identity = scope_identity(self.scope)
        if identity is None:
            # Accept before closing so the client sees our close code rather than a 403.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        user, self.device, self.session_key = identity
        self.user = user
        self.device_pk = self.device.pk
        self.device_id = self.device.device_id
        self._joined: set[str] = set()
        show_online = self.scope.get(SHOW_ONLINE_SCOPE_KEY)
        if show_online is None:
            show_online = await database_sync_to_async(presence_hooks.shows_online)(user)
        self.show_online = bool(show_online)
        # connect_groups names them by the user; user_id stays None until admitted, so a
        # refused socket's disconnect has nothing to undo.
        self.user_id = user.pk
        groups = self.connect_groups()
        self.user_id = None
        # Admission, groups and presence in one Redis round trip (realtime.opening).
        opening = Opening(
            socket=self.channel_name,
            groups=groups,
            process_id=liveness.process_id(),
            entry=liveness.socket_entry(user.pk, self.show_online),
            announce=self.show_online,
        )
        refusal, opened = await services.connect_admit(
            user_id=user.pk, ip=client_ip(self.scope), opening=opening
        )
        if refusal is not None:
            await self.accept()
            await self.close(code=refusal)
            return
        self.user_id = user.pk
        metrics.socket_opened(self)
        if opened.written:
            self._joined.update(groups)
        else:  # a layer the script cannot write to: the same steps, one by one
            await self.join_many(groups)
        # Accepted only now: a logout racing this connect reaches the socket through these
        # groups (handled right after this method), never a window before they are joined.
        await self.accept()
        if opened.written:
            up, epoch, watchers = opened.first, opened.epoch, opened.watchers
        else:
            up, epoch = await presence.socket_up(
                user.pk,
                self.channel_name,
                process_id=liveness.process_id(),
                entry=liveness.socket_entry(user.pk, self.show_online),
            )
            watchers = None
        liveness.local_add(self, epoch)
        if up and self.show_online:
            await presence_announce(user.pk, online=True, watchers=watchers)
        try:
            await self.on_connect()
        except ServiceError as exc:
            await self.send_error(exc.code, exc.detail)
            await self.close(code=CLOSE_FORBIDDEN)

    async def disconnect(self, code: int) -> None:
        if self.user_id is None:
            return
        metrics.socket_closed(self)
        liveness.local_discard(self)
        try:
            await self.on_disconnect(code)
        finally:
            for group in list(self._joined):
                await self.leave(group)
            gone = await presence.socket_down(
                self.user_id, self.channel_name, process_id=liveness.process_id()
            )
            if gone and self.show_online:
                await presence_announce(self.user_id, online=False)

    def connect_groups(self) -> list[str]:
        """The groups the socket joins before it is accepted, in one round trip. Subclasses
        add the groups of their own that every socket of theirs joins."""
        assert self.user_id is not None and self.device_pk is not None
        return [
            user_group(self.user_id),
            device_group(self.device_pk),
            session_group(self.session_key),
        ]

    async def on_connect(self) -> None:
        """Subclasses: join groups, send the initial state."""

    async def on_disconnect(self, code: int) -> None:
        """Subclasses: release what the socket held (floor, queue place, location)."""

    async def before_pong(self) -> None:
        """Subclasses: finish what the frames before a ping started (a pong says they were
        handled: the durable stream's acks are applied before it)."""

    async def on_ping(self) -> None:
        """Subclasses: a keep-alive came (the durable stream re-reads itself here)."""

    # --- groups
    async def join(self, group: str) -> None:
        await self.join_many([group])

    async def join_many(self, groups: list[str]) -> None:
        """Join `groups` in one Redis round trip (realtime.layers), where the layer can."""
        add_many = getattr(self.channel_layer, "group_add_many", None)
        if add_many is not None:
            await add_many(groups, self.channel_name)
        else:  # another layer (tests may use the in-memory one)
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
        self._joined.update(groups)

    def joined_by_script(self, group: str) -> None:
        """A script joined this socket to `group` (as realtime.opening does the connect's):
        recorded so that leaving and the disconnect leave it."""
        self._joined.add(group)

    async def leave(self, group: str) -> None:
        if group in self._joined:
            self._joined.discard(group)
            await self.channel_layer.group_discard(group, self.channel_name)

    # --- inbound
    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections() in the DB thread before EVERY handler: a
        # thread hop per audio frame and per group event. Measured (benchmarks/ptt_fanout.py):
        # audio queued for hundreds of ms behind them, and a floor.taken to 500 sockets
        # delayed the transmission's first second. Every ORM call here goes through
        # database_sync_to_async, which closes stale connections itself, so skip it.
        if message["type"] == "websocket.receive":  # every frame: no handler lookup
            text = message.get("text")
            if text is not None:
                await self.receive(text_data=text)
            else:
                await self.receive(bytes_data=message["bytes"])
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user_id is None:
            return
        if bytes_data is not None:
            if len(bytes_data) > self.max_binary_bytes:
                await self.send_error(
                    "too_large", f"binary frame over {self.max_binary_bytes} bytes"
                )
                return
            await self.guard(self.on_binary(bytes_data), None)
            return
        text = text_data or ""
        limit = self.max_text_bytes  # UTF-8 is at most 4 bytes a character: rarely encoded
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await self.send_error("too_large", f"frame over {self.max_text_bytes} bytes")
            return
        if not await self.rate_allow():
            await self.send_error("rate_limited", "too many messages, slow down")
            return
        try:
            data = json.loads(text)
        except ValueError:
            await self.send_error("bad_json", "frame is not valid JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            await self.send_error("bad_message", "a message is an object with a string 'type'")
            return
        ref = data.get("ref") if isinstance(data.get("ref"), str) else None
        if data["type"] == "ping":
            await presence.heartbeat(self.user_id, self.channel_name)
            await self.before_pong()
            await self.send_model(Pong())
            await self.on_ping()
            return
        try:
            message = self.parse(data)
        except ServiceError as exc:
            await self.send_error(exc.code, exc.detail, ref)
            return
        handler = getattr(self, "on_" + message.type.replace(".", "_"))
        await self.guard(handler(message), ref)

    async def rate_allow(self) -> bool:
        """One token of the user's bucket, in Redis: shared by all of the user's sockets on
        every process. A product whose user has one socket at a time may keep it locally."""
        assert self.user_id is not None
        return await allow_async(
            rate_key(self.rate_scope, self.user_id),
            capacity=self.rate_capacity,
            per_second=self.rate_per_second,
        )

    def parse(self, data: dict[str, Any]) -> Any:
        """Validate against the consumer's schema; ServiceError says what is wrong."""
        if self.inbound is None:
            raise _unknown_type(data)
        try:
            return self.inbound.validate_python(data)
        except ValidationError as exc:
            errors = exc.errors()
            if any(e["type"] == "union_tag_invalid" or e["loc"] == ("type",) for e in errors):
                raise _unknown_type(data) from None
            where = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                for e in errors[:3]
            )
            raise ServiceError("invalid", where) from None

    async def guard(self, coro: Any, ref: str | None) -> None:
        """Run a handler; a refused request or a bug becomes an error frame, not a close."""
        try:
            await coro
        except ServiceError as exc:
            await self.send_error(exc.code, exc.detail, ref)
        except Exception:
            log.exception("handler failed for user %s", self.user_id)
            await self.send_error("server_error", "the server could not handle that", ref)

    async def on_binary(self, data: bytes) -> None:
        await self.send_error("unexpected_binary", "this socket takes no binary frames")

    # --- outbound
    async def send_model(self, model: BaseModel) -> None:
        await self.send(text_data=model.model_dump_json())

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        await super().close(code, reason)
        # Events already on their way to this socket (a member.left, a tick) are still
        # dispatched: dropped here, where the ASGI server raises for a send after close and
        # each one ended the consumer with a logged traceback (thousands in a storm).
        self.base_send = _dropped

    async def send_error(self, code: str, detail: str, ref: str | None = None) -> None:
        await self.send_model(ErrorFrame(code=code, detail=detail, ref=ref))

    # --- group events every socket handles
    async def socket_close(self, event: dict[str, Any]) -> None:
        """realtime.services: the session, device or account this socket stands for ended
        or changed; the code tells the client whether to come back."""
        await self.close(code=int(event.get("code", CLOSE_LOGGED_OUT)))

    async def presence_revoke(self, event: dict[str, Any]) -> None:
        """realtime.services.presence_revoked: sent to all the user's sockets; only the
        presence socket watches anyone (PresenceConsumer)."""

    async def state_lost(self) -> None:
        """realtime.liveness: Redis lost this process's live state; come back."""
        await self.close(code=CLOSE_RECONNECT)


class PresenceConsumer(BaseConsumer):
    """/ws/presence/: keeps the user online while open and reports watched users' status."""

    inbound = TypeAdapter(Watch)

    async def on_presence_watch(self, msg: Watch) -> None:
        for group in [g for g in self._joined if g.startswith("presence.")]:
            await self.leave(group)
        ids = list(dict.fromkeys(msg.user_ids))
        assert self.user_id is not None
        # Joined only to the groups of users this watcher may see: their updates never
        # reach anyone else (a stranger, someone blocked either way).
        shown = await database_sync_to_async(shown_to)(self.user_id, ids)
        for uid in ids:
            if uid in shown:
                await self.join(presence_group(uid))
        await self.send_model(PresenceStatus(statuses=await presence.visible_online(ids, shown)))

    async def presence_update(self, event: dict[str, Any]) -> None:
        await self.send_model(PresenceStatus(statuses={event["user_id"]: event["online"]}))

    async def presence_revoke(self, event: dict[str, Any]) -> None:
        watched = [uid for uid in event["user_ids"] if presence_group(uid) in self._joined]
        for uid in watched:
            await self.leave(presence_group(uid))
        if watched:
            await self.send_model(PresenceStatus(statuses=dict.fromkeys(watched, False)))
