"""Cookies: only the session cookie and CSRF's, both strictly necessary, so nothing needs
consent. The site language comes from the profile (no language cookie), flash messages
live in the session (no messages cookie), and logging out deletes both cookies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from ..selectors import profile_of

LOGGED_OUT = "_privacy_logged_out"


def mark_logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """user_logged_out receiver: the response of this request deletes the CSRF cookie."""
    if request is not None:
        setattr(request, LOGGED_OUT, True)


class PrivacyCookiesMiddleware:
    """After AuthenticationMiddleware: a signed-in user's pages are in their profile's
    language; a logout's response deletes the CSRF cookie (SessionMiddleware deletes the
    emptied session's)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.languages = {code for code, _ in settings.LANGUAGES}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            language = profile_of(user).language
            if language in self.languages:
                translation.activate(language)
                request.LANGUAGE_CODE = language
        response = self.get_response(request)
        if getattr(request, LOGGED_OUT, False):
            response.delete_cookie(
                settings.CSRF_COOKIE_NAME,
                path=settings.CSRF_COOKIE_PATH,
                domain=settings.CSRF_COOKIE_DOMAIN,
                samesite=settings.CSRF_COOKIE_SAMESITE,
            )
        return response
