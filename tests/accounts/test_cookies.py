"""Cookies: only the session cookie and CSRF's (nothing needs consent), and logging out
clears both."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ALLOWED = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}


def set_cookies(response) -> set[str]:  # type: ignore[no-untyped-def]
    return {name for name, morsel in response.cookies.items() if morsel.value}


def test_a_whole_visit_sets_only_the_session_and_csrf_cookies():
    UserFactory(email="visitor@example.com")
    client = Client()
    seen: set[str] = set()
    for url in ("/", "/accounts/login/", "/accounts/signup/", "/contact/", "/privacy/", "/cbline/"):
        seen |= set_cookies(client.get(url))
    seen |= set_cookies(
        client.post(
            "/accounts/login/",
            {"login": "visitor@example.com", "password": "correct-horse-battery"},
        )
    )
    for url in ("/", "/profile/", "/devices/", "/privacy/my-data/", "/videochat/", "/cbline/"):
        seen |= set_cookies(client.get(url))
    # Saving the profile (its language among it) leaves a flash message and a language.
    profile = client.get("/profile/").context["form"].initial
    data = {k: v for k, v in profile.items() if v is not None and k != "photo"}
    data.update(language="ru", birth_date="1990-05-17")
    response = client.post("/profile/", data, follow=True)
    assert b"Profile saved." in response.content
    seen |= set(client.cookies.keys())  # everything any response left in the browser
    assert seen <= ALLOWED, seen - ALLOWED
    # The language follows the profile, not a cookie.
    assert client.get("/")["Content-Language"] == "ru"


def test_logout_clears_the_cookies_and_ends_the_session():
    UserFactory(email="visitor@example.com")
    client = Client()
    client.get("/accounts/login/")
    client.post(
        "/accounts/login/", {"login": "visitor@example.com", "password": "correct-horse-battery"}
    )
    assert Session.objects.count() == 1
    assert client.cookies[settings.CSRF_COOKIE_NAME].value

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    for name in ALLOWED:
        morsel = response.cookies[name]
        assert morsel.value == "" and morsel["max-age"] == 0, name
    assert Session.objects.count() == 0
