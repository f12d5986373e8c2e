"""Policy pages say what the code does: periods come from settings. security.txt (RFC 9116)
and the page on reporting a flaw."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("page", "setting", "value", "shown"),
    [
        (
            "/privacy/cbline/",
            "VOICE_AUDIO_TTL_SECONDS",
            7,
            'at most <strong data-period="audio">7 seconds</strong>',
        ),
        (
            "/privacy/cbline/",
            "VOICE_LOCATION_TTL_SECONDS",
            95,
            '<strong data-period="location">95 seconds</strong>',
        ),
        (
            "/privacy/cbline/",
            "VOICE_CONNECTION_LOG_RETENTION_DAYS",
            61,
            '<strong data-period="connection-log">61 days</strong>',
        ),
        (
            "/privacy/callsapp/",
            "MESSAGING_RETENTION_DAYS",
            9,
            '<strong data-period="messages">9 days</strong>',
        ),
        (
            "/privacy/videochat/",
            "ACCOUNT_DELETION_GRACE_DAYS",
            33,
            "After 33 days everything is removed",
        ),
        (
            "/privacy/videochat/",
            "VIDEOCHAT_REPORT_RETENTION_DAYS",
            12,
            '<strong data-period="report-evidence">12 days</strong>',
        ),
        (
            "/privacy/callsapp/",
            "PAYMENTS_RECORD_RETENTION_YEARS",
            7,
            '<strong data-period="payment-records">7 years</strong>',
        ),
        ("/privacy/", "CONTACT_RETENTION_DAYS", 111, "for 111 days"),
        ("/privacy/", "PRIVACY_EXPORT_LINK_HOURS", 5, "expires 5 hours after"),
    ],
)
def test_periods_on_the_policy_pages_come_from_settings(settings, page, setting, value, shown):
    setattr(settings, setting, value)
    body = Client().get(page).content.decode()
    assert shown in body


def test_each_product_has_its_policy_and_an_unknown_one_is_404():
    for product, title in [
        ("cbline", "CBLINE"),
        ("videochat", "Video Chat Alternative"),
        ("callsapp", "CallsApp"),
    ]:
        response = Client().get(f"/privacy/{product}/")
        assert (
            response.status_code == 200 and f"{title} privacy policy" in response.content.decode()
        )
        assert 'href="/privacy/my-data/"' in response.content.decode()  # rights link to the tools
    assert Client().get("/privacy/nothing/").status_code == 404


def test_security_txt_follows_rfc_9116(settings):
    settings.SECURITY_CONTACT_EMAIL = "sec@example.org"
    response = Client().get("/.well-known/security.txt")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    fields = [line.split(": ", 1) for line in response.content.decode().splitlines()]
    values: dict[str, list[str]] = {}
    for name, value in fields:
        values.setdefault(name, []).append(value)
    assert "mailto:sec@example.org" in values["Contact"]
    assert values["Policy"] == ["http://testserver/security/"]
    assert values["Canonical"] == ["http://testserver/.well-known/security.txt"]
    expires = dt.datetime.strptime(values["Expires"][0], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC
    )
    now = dt.datetime.now(dt.UTC)
    assert now < expires < now + dt.timedelta(days=365)
    page = Client().get("/security/").content.decode()
    assert "sec@example.org" in page and "/contact/?topic=security" in page
