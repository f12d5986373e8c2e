"""The account system in a real browser against a real daphne process: sign up with a birth
date, log out and in, edit the profile, see this browser among the devices, log out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import Device, User
from realtime import closecodes
from realtime.services import user_sockets_close
from tests.e2e.conftest import login, off_loop, wait_for
from tests.e2e.test_voice import open_cbline, wait
from voice.models import ConnectionLog

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

    # The login issued this browser a device; it is the one marked on the devices page.
    device = device_of(context, live_asgi)
    page.goto(f"{live_asgi.url}/devices/")
    row = page.locator(f'[data-device-id="{device.device_id}"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("this-device")).to_be_visible()
    expect(row).to_contain_text("Linux")
    expect(row).to_contain_text("Chrom")
    page.screenshot(path=str(VAR / "e2e-accounts-devices.png"), full_page=True)

    # Log out: private pages send the visitor to the login page.
    page.get_by_test_id("nav-logout").click()
    page.goto(f"{live_asgi.url}/profile/")
    expect(page).to_have_url(f"{live_asgi.url}/accounts/login/?next=/profile/")


# Every WebSocket close code the page sees, recorded before its modules load.
CLOSE_CODES_SPY = """(() => {
  window.__closeCodes = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("close", (e) => window.__closeCodes.push(e.code));
    }
  };
})()"""


def device_of(context, server) -> Device:  # type: ignore[no-untyped-def]
    """The device bound to the browser context's session cookie."""
    cookie = next(
        c for c in context.cookies(server.url) if c["name"] == settings.SESSION_COOKIE_NAME
    )
    return Device.objects.get(session_key=cookie["value"])


def test_devices_page_badges_this_browser_only_and_forget_signs_the_other_out(
    live_asgi, new_context, make_user
):
    user = make_user(email="two-browsers@example.com")
    phone = open_cbline(new_context, live_asgi, user)  # a live socket on the other browser
    phone_ctx = phone.context
    desk_ctx = new_context(viewport={"width": 1280, "height": 900})
    desk = login(desk_ctx, live_asgi, user)
    phone_device, desk_device = device_of(phone_ctx, live_asgi), device_of(desk_ctx, live_asgi)
    Device.objects.filter(pk=phone_device.pk).update(
        last_seen_at=timezone.now() - dt.timedelta(minutes=20)
    )

    desk.goto(f"{live_asgi.url}/devices/")
    expect(desk.get_by_test_id("device-row")).to_have_count(2)
    expect(desk.get_by_test_id("this-device")).to_have_count(1)
    mine = desk.locator(f'[data-device-id="{desk_device.device_id}"]')
    theirs = desk.locator(f'[data-device-id="{phone_device.device_id}"]')
    expect(mine.get_by_test_id("this-device")).to_have_text("This browser")
    expect(theirs.get_by_test_id("this-device")).to_have_count(0)
    expect(theirs.get_by_test_id("last-seen")).to_have_text("Last seen 20\xa0minutes ago")
    VAR.mkdir(exist_ok=True)
    desk.screenshot(path=str(VAR / "e2e-accounts-devices-two.png"), full_page=True)

    # Forget the other browser: its socket closes for good and it is signed out.
    theirs.get_by_test_id("forget-device").click()
    expect(desk.locator(".flash")).to_contain_text("signed out")
    expect(desk.get_by_test_id("device-row")).to_have_count(1)
    wait(phone, "() => !window.cbline.state.open")
    expect(phone.get_by_test_id("cb-conn")).to_contain_text("Disconnected")
    phone.goto(f"{live_asgi.url}/profile/")
    expect(phone).to_have_url(f"{live_asgi.url}/accounts/login/?next=/profile/")
    # This browser is still signed in.
    desk.goto(f"{live_asgi.url}/profile/")
    expect(desk).to_have_url(f"{live_asgi.url}/profile/")


def test_password_change_keeps_this_sessions_socket_and_ends_the_others(
    live_asgi, new_context, make_user
):
    user = make_user(email="rotate@example.com")
    here = open_cbline(new_context, live_asgi, user, init_script=CLOSE_CODES_SPY)
    elsewhere = open_cbline(new_context, live_asgi, user, init_script=CLOSE_CODES_SPY)

    # In the same browser (same session), another tab changes the password.
    tab = here.context.new_page()
    tab.goto(f"{live_asgi.url}/accounts/password/change/")
    tab.fill("input[name=oldpassword]", "correct-horse-battery")
    tab.fill("input[name=password1]", "Fresh-Pass-4471")
    tab.fill("input[name=password2]", "Fresh-Pass-4471")
    tab.locator("input[name=password2]").press("Enter")
    expect(tab.locator(".flash")).to_be_visible()

    # The other browser's session ended: its socket is closed for good.
    wait(elsewhere, "() => !window.cbline.state.open")
    expect(elsewhere.get_by_test_id("cb-conn")).to_contain_text("Disconnected")
    assert elsewhere.evaluate("window.__closeCodes") == [4001]
    # This one carries on, and a reload connects with the session's new cookie.
    assert here.evaluate("window.__closeCodes") == []
    assert here.evaluate("window.cbline.state.open")
    here.reload()
    wait(here, "() => window.cbline && window.cbline.state.open")
    assert Device.objects.filter(user=user).count() == 1


def test_a_dropped_socket_reconnects_by_itself(live_asgi, new_context, make_user):
    """A restart-like close (4012) brings the page back without a reload; a final one does
    not (covered above)."""
    user = make_user(email="bounce@example.com")
    page = open_cbline(new_context, live_asgi, user, init_script=CLOSE_CODES_SPY)
    # The connect has finished (groups joined) once its connection is logged.
    logged = ConnectionLog.objects.filter(user=user)
    wait_for(logged.exists, page, "the connection logged")
    logs = logged.count()
    assert logs == 1
    off_loop(user_sockets_close, user_id=user.pk, code=closecodes.SERVICE_RESTART)
    wait_for(lambda: logged.count() > logs, page, "the reconnection logged")
    wait(page, "() => window.cbline.state.open")
    assert page.evaluate("window.__closeCodes") == [closecodes.SERVICE_RESTART]
    assert ConnectionLog.objects.filter(user=user).count() == logs + 1


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
