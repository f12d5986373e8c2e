"""CallsApp's page. Everything on it runs in the browser (the Matrix crypto SDK holds the
keys); the server only renders the shell and answers the Matrix API (see
docs/protocols/callsapp.md)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.selectors import meets_age_rule


def app(request: HttpRequest) -> HttpResponse:
    """/messaging/: sign-in page for visitors, the age notice under CallsApp's age rule (10),
    otherwise the messenger, which gets its own ids from `account/whoami`."""
    user = request.user
    if not user.is_authenticated:
        return render(request, "messaging/login.html", {"next": request.get_full_path()})
    if not meets_age_rule(user, "messaging"):  # type: ignore[arg-type]
        return render(request, "messaging/age_restricted.html", status=403)
    return render(request, "messaging/app.html")
