"""The account system in a real browser against a real daphne process: sign up with a birth
date, log out and in, edit the profile, see this browser among the devices, log out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from accounts.models import Device, User
from tests.e2e.conftest import login

pytestmark = pytest.mark.e2e

VAR = Path(__file__).resolve().parents[2] / "var"
PASSWORD = "Sturdy-Pass-9931"


def test_sign_up_log_in_edit_profile_see_device_log_out(live_asgi, new_context):
    context = new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # Sign up with email, password and birth date.
    page.goto(f"{live_asgi.url}/accounts/signup/")
    VAR.mkdir(exist_ok=True)
    page.screenshot(path=str(VAR / "e2e-accounts-signup.png"), full_page=True)
    page.fill("input[name=email]", "pat@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.fill("input[name=birth_date]", "1994-07-21")
    page.click("[data-testid=signup-form] button[type=submit]")
    page.wait_for_url(f"{live_asgi.url}/")
    expect(page.get_by_test_id("nav-profile")).to_contain_text("pat@example.com")
    user = User.objects.get(email="pat@example.com")
    assert user.profile.birth_date == dt.date(1994, 7, 21)
    page.screenshot(path=str(VAR / "e2e-accounts-home.png"), full_page=True)

    # Log out, then log in through the real form.
    page.get_by_test_id("nav-logout").click()
    expect(page.get_by_test_id("hero-signup")).to_be_visible()
    page = login(context, live_asgi, SimpleNamespace(email="pat@example.com"), PASSWORD)

    # Edit the profile: the nickname then shows in the header.
    page.goto(f"{live_asgi.url}/profile/")
    page.fill("input[name=nickname]", "PatTheBrave")
    page.fill("textarea[name=description]", "Night owl, radio fan.")
    page.select_option("select[name=country]", "PT")
    page.select_option("select[name=gender]", "x")
    page.uncheck("input[name=show_online_status]")
    page.get_by_test_id("profile-save").click()
    page.wait_for_url(f"{live_asgi.url}/profile/")
    expect(page.locator(".flash")).to_contain_text("Profile saved")
    expect(page.get_by_test_id("nav-profile")).to_have_text("PatTheBrave")
    user.profile.refresh_from_db()
    assert (user.profile.country, user.profile.show_online_status) == ("PT", False)
    page.screenshot(path=str(VAR / "e2e-accounts-profile.png"), full_page=True)

    # This browser registered itself (site.js) and is marked on the devices page.
    browser_id = page.evaluate("localStorage.getItem('cp.device_id')")
    for _ in range(20):
        if Device.objects.filter(user=user, device_id=browser_id).exists():
            break
        page.wait_for_timeout(100)
    page.goto(f"{live_asgi.url}/devices/")
    row = page.locator(f'[data-device-id="{browser_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("[data-this-device]")).to_be_visible()
    expect(row).to_contain_text("Linux")
    expect(row).to_contain_text("Chromium")
    page.screenshot(path=str(VAR / "e2e-accounts-devices.png"), full_page=True)

    # Log out: private pages send the visitor to the login page.
    page.get_by_test_id("nav-logout").click()
    page.goto(f"{live_asgi.url}/profile/")
    expect(page).to_have_url(f"{live_asgi.url}/accounts/login/?next=/profile/")


def test_forget_this_device(live_asgi, new_context, make_user):
    user = make_user(email="forget@example.com")
    context = new_context()
    page = login(context, live_asgi, user)
    for _ in range(30):
        if Device.objects.filter(user=user).exists():
            break
        page.wait_for_timeout(100)
    page.goto(f"{live_asgi.url}/devices/")
    page.get_by_test_id("forget-device").click()
    expect(page.locator(".flash")).to_contain_text("Device forgotten")
    assert not Device.objects.filter(user=user).exists()


def test_delete_profile_locks_the_account_at_once(live_asgi, new_context, make_user):
    user = make_user(email="leaving@example.com")
    context = new_context()
    page = login(context, live_asgi, user)
    page.goto(f"{live_asgi.url}/profile/delete/")
    page.fill("input[name=confirm]", "DELETE")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("[data-testid=delete-form] button[type=submit]")
    page.wait_for_url(f"{live_asgi.url}/")
    expect(page.locator(".flash")).to_contain_text("Your profile is deleted")
    expect(page.get_by_test_id("hero-signup")).to_be_visible()  # logged out
    user.refresh_from_db()
    assert not user.is_active and user.deletion_requested_at is not None

    # Logging in again is refused.
    page.goto(f"{live_asgi.url}/accounts/login/")
    page.fill("input[name=login]", "leaving@example.com")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("[data-testid=login-form] button[type=submit]")
    expect(page.locator("h1")).to_have_text("This account is closed")
