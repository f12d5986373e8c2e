"""Failed logins are throttled per account and per address (django-axes, counts in Redis),
with a page that says what happened; other people's logins are unaffected."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
RIGHT = "correct-horse-battery"


def attempt(email: str, password: str, ip: str) -> object:
    return Client(REMOTE_ADDR=ip).post("/accounts/login/", {"login": email, "password": password})


def test_an_account_is_locked_after_five_wrong_passwords_from_anywhere(settings) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        resp = attempt(user.email, "wrong-password", f"203.0.113.{i + 1}")
        assert resp.status_code == 200  # the form again, with its error
    # The fifth failure locks the account and says so.
    assert attempt(user.email, "wrong-password", "203.0.113.9").status_code == 429
    # Now even the right password is refused for a while, with a clear message.
    locked = attempt(user.email, RIGHT, "198.51.100.7")
    assert locked.status_code == 429
    text = locked.content.decode()
    assert "Too many failed log-in attempts" in text and "15 minutes" in text
    assert "_auth_user_id" not in locked.client.session
    # The same address case-folded is the same account.
    assert attempt(user.email.upper(), RIGHT, "198.51.100.8").status_code == 429
    # Somebody else logs in as usual.
    other = UserFactory()
    assert attempt(other.email, RIGHT, "198.51.100.7").status_code == 302


def test_an_address_is_locked_after_five_failures_against_any_accounts() -> None:
    victims = [UserFactory() for _ in range(4)]
    for victim in victims:
        assert attempt(victim.email, "wrong", "192.0.2.50").status_code == 200
    assert attempt(UserFactory().email, "wrong", "192.0.2.50").status_code == 429
    bystander = UserFactory()
    assert attempt(bystander.email, RIGHT, "192.0.2.50").status_code == 429
    # From another address the same person gets in.
    assert attempt(bystander.email, RIGHT, "192.0.2.51").status_code == 302


def test_a_success_before_the_limit_resets_the_count() -> None:
    user = UserFactory()
    for _ in range(4):
        attempt(user.email, "wrong", "192.0.2.60")
    assert attempt(user.email, RIGHT, "192.0.2.60").status_code == 302
    for _ in range(4):
        assert attempt(user.email, "wrong", "192.0.2.60").status_code == 200
    assert attempt(user.email, RIGHT, "192.0.2.60").status_code == 302
