"""The banned page in a real Chromium: the countdown runs, and when the ban ends the page
reloads into the chat page."""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest
from django.conf import settings

from tests.conftest import session_cookie_for
from videochat.services import ban_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")
def test_countdown_runs_and_the_page_opens_when_the_ban_ends(live_asgi, make_user):
    from playwright.sync_api import sync_playwright

    user = make_user()
    ban_create(user=user, reason="Spam in chat", duration=dt.timedelta(seconds=5), created_by=None)
    cookie = session_cookie_for(user)
    # No ORM past this point: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
            ],
        )
        try:
            context = browser.new_context()
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_asgi.url}]
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
        finally:
            browser.close()
