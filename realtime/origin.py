"""The WebSocket origin check: a browser's Origin must be one of the configured origins,
compared as (scheme, host, port). Channels' AllowedHostsOriginValidator compared the host
only, so a page on another port or scheme of the same host could open a user's sockets
with their cookie (cross-site WebSocket hijacking)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """(scheme, host, port) with the scheme's default port filled in; None for anything
    that is not an http(s) origin ("null", garbage)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def served_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the socket itself was opened on: its Host header (when ALLOWED_HOSTS takes
    it) and scheme. Behind a proxy the ASGI server's proxy headers make the scheme wss."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return parse_origin(f"{scheme}://{host}")


def origin_allowed(scope: dict[str, Any]) -> bool:
    raw = dict(scope.get("headers") or []).get(b"origin")
    origin = parse_origin(raw.decode("latin-1")) if raw else None
    if origin is None:
        return False
    if origin in {parse_origin(o) for o in settings.WS_ALLOWED_ORIGINS}:
        return True
    return bool(settings.WS_ALLOW_SERVED_ORIGIN) and origin == served_origin(scope)


class OriginValidator:
    """ASGI middleware: a WebSocket whose Origin is not allowed is refused at the handshake
    (HTTP 403), before the session is even read."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
