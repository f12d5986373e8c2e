"""The device behind every request and every socket.

HTTP: `DeviceMiddleware` (after AuthenticationMiddleware) sets `request.device`, the Device
bound to the login session, or None for visitors. A signed-in session that has none (made
before devices were issued by the server) gets one here.

WebSocket: `SessionDeviceAuthMiddleware` reads the session cookie and puts the user, their
device and the session key into the scope in one database hop; realtime.BaseConsumer refuses
a socket without all three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from realtime.batching import Batcher, PerLoop
from realtime.dbpool import pooled
from realtime.hooks import SHOW_ONLINE_SCOPE_KEY
from realtime.hooks import presence as presence_hooks

from . import selectors, services
from .models import Device, User
from .receivers import session_device_bind


class DeviceMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.device = None  # type: ignore[attr-defined]
        if request.user.is_authenticated:
            self._attach(request)
        response = self.get_response(request)
        device: Device | None = getattr(request, "device", None)
        key = request.session.session_key
        # A view may have cycled the session key (a password change keeps this session
        # under a new key): the device follows it.
        if (
            device is not None
            and key
            and device.session_key != key
            and request.user.is_authenticated
            and request.user.pk == device.user_id
        ):
            services.device_rebind(device=device, session_key=key)
        return response

    @staticmethod
    def _attach(request: HttpRequest) -> None:
        user: User = request.user  # type: ignore[assignment]
        device = selectors.device_of_session(
            user=user, device_pk=request.session.get(selectors.DEVICE_SESSION_KEY)
        )
        if device is None:
            if request.session.session_key is None:
                request.session.save()
            device = services.device_issue(
                user=user,
                session_key=request.session.session_key,  # type: ignore[arg-type]
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
        else:
            services.device_seen(device=device)
        session_device_bind(request, device)


def _identify(session_keys: list[str | None]) -> list[tuple[Any, Device | None, bool]]:
    """(user, device, whether the user shows their online status) of each key: the last
    rides on the profile the session's read loaded, here on the same thread (not another
    hop per socket)."""
    found: list[tuple[Any, Device | None, bool]] = []
    for user, device in selectors.session_identities(session_keys):
        if device is None:
            found.append((user, None, False))
            continue
        services.device_seen(device=device)
        found.append((user, device, presence_hooks.shows_online(user)))
    return found


class _SessionReader(Batcher[str]):
    """The session reads of the connects that arrive while one is on its way go together:
    one statement and one database hop a batch (a reconnect storm's every socket reads its
    session at once; each hop to the pool cost the event loop more than the read itself)."""

    async def send_batch(self, items: list[str]) -> list[Any]:
        return await pooled(_identify)(list(items))


_session_reader = PerLoop(_SessionReader)


class SessionDeviceAuthMiddleware:
    """Sets scope["user"], scope["device"] and scope["session_key"] from the session cookie
    (wrap with CookieMiddleware, or use `SessionDeviceAuthMiddlewareStack`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        session_key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME) or None
        user: Any = AnonymousUser()
        device, show_online = None, False
        if session_key is not None:
            # On the pool, with the other connects' of the moment (a reconnect storm's).
            user, device, show_online = await _session_reader.get().call(session_key)
        # In place: CookieMiddleware handed us its own copy for this socket, and another copy
        # would be held for the socket's life (benchmarks/idle_memory.py).
        scope["user"] = user if device is not None else AnonymousUser()
        scope["device"] = device
        scope["session_key"] = session_key if device is not None else None
        scope[SHOW_ONLINE_SCOPE_KEY] = show_online
        return await self.inner(scope, receive, send)


def SessionDeviceAuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionDeviceAuthMiddleware(inner))
