"""Django for HTTP APIs whose requests carry their own credentials (the Bot API's bearer
token): a handler with only async-capable middleware and no thread of its own per request,
so an async view that waits (getUpdates' 25 s long poll) waits on the event loop alone.

Through the site's stack it cost a thread and a database connection per waiting request:
three of its middlewares are sync-only (sessions, devices, privacy cookies), so Django ran
the chain on a thread and the view under async_to_sync on it; and Django's ASGIHandler
gives every request a thread of its own for its thread-sensitive calls, kept until the
request ends. Here those calls share asgiref's one thread of the process, as the sockets'
do; each is short (a read or a committed write), none waits.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string


class TokenApiHandler(ASGIHandler):
    """settings.TOKEN_API_MIDDLEWARE instead of MIDDLEWARE; every one must be async-capable
    (a sync one would bring the thread per request back: refused at start)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(settings.TOKEN_API_MIDDLEWARE):
            factory = import_string(path)
            if not getattr(factory, "async_capable", False):
                raise ImproperlyConfigured(f"TOKEN_API_MIDDLEWARE: {path} is not async-capable")
            try:
                mw = factory(handler)
            except MiddlewareNotUsed:
                continue
            # The hooks, in Django's order (BaseHandler.load_middleware), all run async.
            if hasattr(mw, "process_view"):
                self._view_middleware.insert(0, self.adapt_method_mode(True, mw.process_view))
            if hasattr(mw, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(True, mw.process_template_response)
                )
            if hasattr(mw, "process_exception"):
                self._exception_middleware.append(
                    self.adapt_method_mode(False, mw.process_exception)
                )
            handler = convert_exception_to_response(mw)
        self._middleware_chain = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}")
        # Unlike ASGIHandler.__call__, no ThreadSensitiveContext: that is the thread per
        # request (see the module's docstring).
        await self.handle(scope, receive, send)
