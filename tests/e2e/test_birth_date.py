"""The 18+ bypass the review found, in a real browser: a 15-year-old cannot edit their birth
date into adulthood on the profile page; a correction waits for staff, and Video chat stays
closed meanwhile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from playwright.sync_api import expect

from accounts.models import BirthDateChange, Profile
from tests.e2e.conftest import login, off_loop

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results"


def test_a_minor_cannot_change_the_birth_date_into_video_chat(live_asgi, make_user, new_context):
    kid = make_user()
    off_loop(lambda: Profile.objects.filter(user=kid).update(birth_date=dt.date(2011, 3, 9)))
    context = new_context(viewport={"width": 1280, "height": 900})
    page = login(context, live_asgi, kid)

    page.goto(f"{live_asgi.url}/videochat/")
    expect(page.get_by_test_id("videochat-age-restricted")).to_be_visible()

    # The profile shows the birth date as fixed text, not an input.
    page.goto(f"{live_asgi.url}/profile/")
    expect(page.get_by_test_id("profile-birth-date")).to_have_text("9 March 2011")
    assert page.locator("input[name=birth_date]").count() == 0
    # Saving the profile with a forged birth_date field changes nothing.
    page.evaluate(
        """() => { const i = document.createElement('input'); i.type = 'hidden';
        i.name = 'birth_date'; i.value = '1990-01-01';
        document.querySelector('[data-testid=profile-form]').append(i); }"""
    )
    page.get_by_test_id("profile-save").click()
    expect(page.locator(".flash")).to_contain_text("Profile saved")
    assert off_loop(lambda: Profile.objects.get(user=kid).birth_date) == dt.date(2011, 3, 9)

    # Asking for a correction files a request for staff; nothing changes yet.
    page.get_by_test_id("birth-date-change-link").click()
    page.fill("input[name=requested]", "1990-01-01")
    page.fill("textarea[name=reason]", "I typed the wrong year")
    page.click("[data-testid=birth-date-change-form] button[type=submit]")
    expect(page.get_by_test_id("birth-date-change-pending")).to_contain_text("1 January 1990")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "birth-date-change-pending.png"), full_page=True)
    change = off_loop(lambda: BirthDateChange.objects.get(user=kid))
    assert change.status == "pending"

    page.goto(f"{live_asgi.url}/videochat/")
    expect(page.get_by_test_id("videochat-age-restricted")).to_be_visible()
