"""Structured logs (structlog): one JSON object a line in production, readable lines locally.

Every line of an HTTP request carries its `request_id` (nginx's X-Request-ID, else a new
one, sent back in the response), every line of a WebSocket carries its `connection_id`:
`log_context` binds them in the ASGI task that serves the request or socket, and structlog's
contextvars reach the Django code it runs, sync or async. Standard-library loggers (Django,
Celery, libraries) go through the same formatter.

What must never be logged (message content, audio, key material, exact location) is kept
out twice: our code logs ids and counts only, and `redact` drops any such field by name.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

# Fields whose values are content, secrets or location: replaced, whoever logs them.
SENSITIVE_FIELDS = frozenset(
    {
        "text",
        "body",
        "content",
        "message_text",
        "ciphertext",
        "password",
        "passphrase",
        "token",
        "key",
        "keys",
        "one_time_keys",
        "device_keys",
        "fallback_keys",
        "audio",
        "packet",
        "sdp",
        "candidate",
        "latitude",
        "longitude",
        "lat",
        "lon",
        "lng",
        "location",
        "coords",
        "cookie",
        "authorization",
    }
)
REDACTED = "[redacted]"
access_log = structlog.get_logger("comms.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    for field in list(event_dict):
        if field.lower() in SENSITIVE_FIELDS:
            event_dict[field] = REDACTED
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def logging_config(*, json_logs: bool, level: str) -> dict[str, Any]:
    """Django's LOGGING, every record rendered by structlog; also configures structlog."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": _shared_processors(),
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "daphne": {"level": "WARNING"},
            "django.channels.server": {"level": "WARNING"},
            # Frame-level debug output of the socket libraries would contain message bodies.
            "websockets": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            # uvicorn's INFO lines for each socket's open and close: the access log has them.
            "realtime.wsprotocol": {"level": "WARNING"},
            "uvicorn.access": {"level": "WARNING"},
        },
    }


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class _SocketAccess:
    """One socket's access-log state and its send/receive wrappers: one small object held for
    the socket's life instead of three closures, their cells and a dict."""

    __slots__ = ("closed", "code", "path", "server_receive", "server_send")

    def __init__(self, path: str, server_receive: Any, server_send: Any) -> None:
        self.path = path
        self.server_receive = server_receive
        self.server_send = server_send
        self.code: Any = None
        self.closed = False  # the first close or disconnect names the code

    async def send(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.accept":
            access_log.info("socket open", path=self.path)
        elif message.get("type") == "websocket.close":
            self._close(message.get("code", 1000))
        await self.server_send(message)

    def receive(self) -> asyncio.Future[Any]:
        # A future, not a coroutine: a server whose receive returns one
        # (realtime.wsprotocol) then costs an idle socket no task here.
        received = asyncio.ensure_future(self.server_receive())
        if received.done():
            self._note(received)  # a callback would run after the app returned
        else:
            received.add_done_callback(self._note)  # runs before the awaiting app
        return received

    def _note(self, received: asyncio.Future[Any]) -> None:
        if received.cancelled() or received.exception() is not None:
            return
        message = received.result()
        if message.get("type") == "websocket.disconnect":
            self._close(message.get("code"))

    def _close(self, code: Any) -> None:
        if not self.closed:
            self.closed, self.code = True, code


def log_context(app: ASGIApp) -> ASGIApp:
    """Bind request_id (HTTP) or connection_id (WebSocket) for everything `app` logs while
    serving this scope; HTTP responses carry X-Request-ID back. One line per request and
    per socket (path without its query string, status or close code, duration)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            return await app(scope, receive, send)
        structlog.contextvars.clear_contextvars()
        request_id = _request_id(scope.get("headers") or [])
        started = time.perf_counter()
        path = str(scope.get("path", ""))[:200]
        if kind == "websocket":
            structlog.contextvars.bind_contextvars(
                connection_id=uuid.uuid4().hex[:16], request_id=request_id
            )
            socket = _SocketAccess(path, receive, send)
            try:
                return await app(scope, socket.receive, socket.send)
            finally:
                access_log.info(
                    "socket closed",
                    path=path,
                    code=socket.code,
                    seconds=round(time.perf_counter() - started, 3),
                )
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status: dict[str, int] = {}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = message.get("status", 0)
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            return await app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "request",
                method=scope.get("method"),
                path=path,
                status=status.get("code"),
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

    return wrapped
