"""Deletion requested by someone who cannot log in: confirmed by email, then the same
pipeline. An unconfirmed request changes nothing."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core import mail
from django.test import Client

from accounts.models import DeletionRequest, User
from accounts.privacy import services as privacy_services
from accounts.tasks import deletion_requests_purge
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def request_deletion(email: str) -> str:
    response = Client().post(
        "/privacy/delete-request/", {"email": email, "message": "lost my phone"}
    )
    assert response.status_code == 200
    return response.content.decode()


def link_in(message: mail.EmailMessage) -> str:
    match = re.search(r"http://testserver(/privacy/delete-request/confirm/[^/\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_an_unconfirmed_request_changes_nothing():
    user = UserFactory(email="owner@example.com")
    page = request_deletion("Owner@Example.com")
    assert "If an account uses Owner@Example.com" in page
    (message,) = mail.outbox
    assert message.to == ["owner@example.com"]
    link = link_in(message)

    user.refresh_from_db()
    assert user.is_active and user.deletion_requested_at is None
    assert Client().login(email="owner@example.com", password="correct-horse-battery")
    # Opening the link (a mail scanner does) only shows the button.
    assert b"deletion-confirm" in Client().get(link).content
    user.refresh_from_db()
    assert user.is_active and user.deletion_requested_at is None


def test_confirming_runs_the_deletion_pipeline():
    user = UserFactory(email="owner@example.com")
    request_deletion("owner@example.com")
    link = link_in(mail.outbox[0])

    response = Client().post(link)
    assert response.status_code == 200 and b"deletion-confirmed" in response.content
    user.refresh_from_db()
    assert not user.is_active and user.deletion_requested_at is not None
    assert not Client().login(email="owner@example.com", password="correct-horse-battery")
    request = DeletionRequest.objects.get()
    assert (request.status, request.user_id) == ("confirmed", user.pk)
    # The link works once.
    assert Client().post(link).status_code == 404
    # After the grace period the account is erased; the record stays without the address.
    later = user.deletion_requested_at + dt.timedelta(days=31)
    assert privacy_services.deleted_accounts_purge(now=later) == 1
    request.refresh_from_db()
    assert (request.email, request.user_id, request.status) == ("", None, "confirmed")


def test_an_unknown_address_gets_the_same_answer_and_no_mail():
    UserFactory(email="owner@example.com")
    page = request_deletion("nobody@example.com")
    assert "If an account uses nobody@example.com" in page
    assert mail.outbox == []
    assert DeletionRequest.objects.get().user is None


def test_an_expired_link_refuses_and_the_beat_forgets_it(settings):
    settings.PRIVACY_DELETION_CONFIRM_HOURS = 24
    user = UserFactory(email="owner@example.com")
    request_deletion("owner@example.com")
    link = link_in(mail.outbox[0])
    DeletionRequest.objects.update(created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))

    response = Client().post(link)
    assert response.status_code == 404 and b"expired" in response.content
    assert User.objects.get(pk=user.pk).is_active
    assert deletion_requests_purge.delay().get() == 1
    assert not DeletionRequest.objects.exists()


def test_repeated_requests_mail_once_per_link_life():
    UserFactory(email="owner@example.com")
    request_deletion("owner@example.com")
    request_deletion("owner@example.com")
    assert len(mail.outbox) == 1


def test_a_bad_form_is_refused_with_a_message():
    response = Client().post("/privacy/delete-request/", {"email": "not-an-email"})
    assert response.status_code == 200
    assert b"Enter a valid email address" in response.content
    assert not DeletionRequest.objects.exists()


def test_staff_see_requests_in_the_admin():
    UserFactory(email="owner@example.com")
    request_deletion("owner@example.com")
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = staff.get("/admin/accounts/deletionrequest/").content.decode()
    assert "owner@example.com" in page and "Waiting for email confirmation" in page
    detail = staff.get(
        f"/admin/accounts/deletionrequest/{DeletionRequest.objects.get().pk}/change/"
    )
    assert b"lost my phone" in detail.content and b"token_hash" not in detail.content


def test_one_network_address_cannot_flood_the_form(settings):
    settings.PRIVACY_DELETION_REQUESTS_PER_HOUR = 2
    UserFactory(email="owner@example.com")
    request_deletion("a@example.com")
    request_deletion("b@example.com")
    response = Client().post("/privacy/delete-request/", {"email": "owner@example.com"})
    assert response.status_code == 200
    assert b"Please wait a little" in response.content
    assert DeletionRequest.objects.count() == 2 and mail.outbox == []


def test_the_address_the_policy_names_leads_to_the_form():
    # The Video Chat Alternative policy sends people to /account-deletion/.
    response = Client().get("/account-deletion/")
    assert response.status_code == 301
    assert response["Location"] == "/privacy/delete-request/"
    page = Client().get("/account-deletion/", follow=True)
    assert page.status_code == 200
    assert b'data-testid="deletion-request-form"' in page.content
