"""The banned page in a real Chromium: the countdown runs, and when the ban ends the page
reloads into the chat page."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings

from tests.conftest import session_cookie_for
from tests.e2e.conftest import off_loop
from videochat.services import ban_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_countdown_runs_and_the_page_opens_when_the_ban_ends(live_asgi, make_user, new_context):
    user = make_user()
    off_loop(
        ban_create,
        user=user,
        reason="Spam in chat",
        duration=dt.timedelta(seconds=5),
        created_by=None,
    )
    context = new_context()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session_cookie_for(user),
                "url": live_asgi.url,
            }
        ]
    )
    page = context.new_page()
    page.goto(f"{live_asgi.url}/videochat/")
    assert "Spam in chat" in page.text_content("[data-testid=ban-reason]")
    countdown = page.locator("[data-testid=ban-countdown]")
    page.wait_for_function(
        "el => /^00:00:0[0-5]$/.test(el.textContent)", arg=countdown.element_handle()
    )
    first = countdown.text_content()
    page.wait_for_function(
        "([el, t]) => el.textContent !== t", arg=[countdown.element_handle(), first]
    )
    assert re.fullmatch(r"00:00:0[0-5]", countdown.text_content() or "")
    assert page.locator("[data-testid=appeal-form]").is_visible()
    # At zero the page reloads; the ban is over, so the chat page is served.
    page.wait_for_selector("[data-videochat]", state="attached", timeout=15000)
