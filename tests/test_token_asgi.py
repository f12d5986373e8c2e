"""config/token_asgi.py: the Bot API's lean handler refuses a middleware that would run on a
thread (tests/messaging/test_bot_api_server.py shows what it serves)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.token_asgi import TokenApiHandler


def test_a_sync_only_middleware_is_refused_at_start(settings) -> None:  # type: ignore[no-untyped-def]
    settings.TOKEN_API_MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "accounts.middleware.DeviceMiddleware",  # sync only
    ]
    with pytest.raises(ImproperlyConfigured, match="DeviceMiddleware"):
        TokenApiHandler()


def test_the_bot_api_stack_is_all_async_capable() -> None:
    TokenApiHandler()  # refused otherwise, as above
