"""How django-axes names the account and the address of a login attempt (settings AXES_*)."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' gate before the password backends. A call without a request (a shell,
    Django's test client `login()`) has no client to throttle, so it passes through."""

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


def login_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """The account tried: allauth passes the email it parsed; the form posts it as "login".
    Lower-cased so that "Pat@…" and "pat@…" share one counter."""
    value = (credentials or {}).get("email") or (credentials or {}).get("username")
    if not value and request is not None:
        value = request.POST.get("login", "")
    return str(value or "").strip().lower()


def login_client_ip(request: HttpRequest) -> str:
    # The ASGI server has put the client's address here (proxy headers from trusted proxies
    # only), so a header sent by the client itself is never believed.
    return str(request.META.get("REMOTE_ADDR") or "")


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The page a locked-out login gets: what happened and how long it lasts (429)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(
        request,
        "account/lockout.html",
        {"failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes},
        status=429,
    )
