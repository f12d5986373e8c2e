"""Public pages: the products' privacy policies, cookies, security contact. Every period
they state comes from settings, so the text says what the code does."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

POLICIES = {
    "cbline": ("CBLINE", "privacy/policy_cbline.html"),
    "videochat": ("Video Chat Alternative", "privacy/policy_videochat.html"),
    "callsapp": ("CallsApp", "privacy/policy_callsapp.html"),
}
SECURITY_TXT_DAYS = 180  # RFC 9116: Expires less than a year ahead


def _periods() -> dict[str, object]:
    return {
        "grace_days": settings.ACCOUNT_DELETION_GRACE_DAYS,
        "export_link_hours": settings.PRIVACY_EXPORT_LINK_HOURS,
        "export_interval_hours": settings.PRIVACY_EXPORT_MIN_INTERVAL_HOURS,
        "deletion_confirm_hours": settings.PRIVACY_DELETION_CONFIRM_HOURS,
        "contact_days": settings.CONTACT_RETENTION_DAYS,
        "audio_seconds": settings.VOICE_AUDIO_TTL_SECONDS,
        "location_seconds": settings.VOICE_LOCATION_TTL_SECONDS,
        "presence_seconds": settings.PRESENCE_TTL_SECONDS,
        "connection_log_days": settings.VOICE_CONNECTION_LOG_RETENTION_DAYS,
        "skip_minutes": settings.VIDEOCHAT_SKIP_TTL_SECONDS // 60,
        "report_days": settings.VIDEOCHAT_REPORT_RETENTION_DAYS,
        "payment_records_years": settings.PAYMENTS_RECORD_RETENTION_YEARS,
        "videochat_age": settings.AGE_RULES.get("videochat", 0),
        "callsapp_age": settings.AGE_RULES.get("messaging", 0),
        # CallsApp's own setting; the page says "undelivered messages are deleted" with it.
        "messages_days": settings.MESSAGING_RETENTION_DAYS,
        "security_email": settings.SECURITY_CONTACT_EMAIL,
    }


def privacy_index(request: HttpRequest) -> HttpResponse:
    return render(request, "privacy/index.html", {"policies": POLICIES, **_periods()})


def policy(request: HttpRequest, product: str) -> HttpResponse:
    if product not in POLICIES:
        raise Http404
    title, template = POLICIES[product]
    return render(request, template, {"product": title, "policies": POLICIES, **_periods()})


def cookies(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "privacy/cookies.html",
        {
            "session_cookie": settings.SESSION_COOKIE_NAME,
            "csrf_cookie": settings.CSRF_COOKIE_NAME,
            "session_days": settings.SESSION_COOKIE_AGE // 86400,
        },
    )


def security(request: HttpRequest) -> HttpResponse:
    return render(request, "privacy/security.html", _periods())


def security_txt(request: HttpRequest) -> HttpResponse:
    """RFC 9116. Expires moves with the calendar, so the file never goes stale."""
    expires = (timezone.now() + dt.timedelta(days=SECURITY_TXT_DAYS)).replace(microsecond=0)
    lines = [
        f"Contact: mailto:{settings.SECURITY_CONTACT_EMAIL}",
        f"Contact: {request.build_absolute_uri(reverse('contact'))}?topic=security",
        f"Expires: {expires.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "Preferred-Languages: en, ru",
        f"Policy: {request.build_absolute_uri(reverse('security'))}",
        f"Canonical: {request.build_absolute_uri(reverse('security_txt'))}",
    ]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")
