"""Devices are issued by the server at login and bound to the session: the devices page, the
description a browser gives of itself, forget, sign out everywhere, logout, password change."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import Device, User
from realtime.events import capture_events
from realtime.keys import device_group, session_group
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)
PASSWORD = "correct-horse-battery"


def browser(user: User, user_agent: str = FIREFOX_LINUX) -> Client:
    """A browser that logged in through the real login form."""
    cache.clear()  # allauth's login rate limit counts every login of the test process
    client = Client(HTTP_USER_AGENT=user_agent)
    response = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content[:300]
    return client


def device_of(client: Client) -> Device:
    return Device.objects.get(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)


def signed_in(client: Client) -> bool:
    return client.get("/profile/").status_code == 200


def test_login_issues_a_device_bound_to_the_session():
    user = UserFactory()
    client = browser(user, CHROME_ANDROID)
    device = device_of(client)
    assert device.user == user
    assert re.fullmatch(r"[A-Z]{10}", device.device_id)
    assert (device.make, device.model, device.platform) == ("Chrome 156", "mobile", "Android")
    # A second login is a second device with its own id, and the first stays.
    second = browser(user)
    assert device_of(second).device_id != device.device_id
    assert Device.objects.filter(user=user).count() == 2


def test_device_ids_are_unique_across_users():
    ids = {device_of(browser(UserFactory())).device_id for _ in range(5)}
    assert len(ids) == 5


def test_the_devices_page_badges_only_this_browser():
    user = UserFactory()
    other = browser(user, CHROME_ANDROID)
    Device.objects.filter(pk=device_of(other).pk).update(
        last_seen_at=timezone.now() - dt.timedelta(hours=3)
    )
    client = browser(user)
    page = client.get("/devices/").content.decode()
    assert page.count('data-testid="this-device"') == 1
    rows = re.findall(r'<li class="row[^"]*" data-device-id="([A-Z]+)".*?</li>', page, re.S)
    assert set(rows) == {device_of(client).device_id, device_of(other).device_id}
    mine = re.search(rf'data-device-id="{device_of(client).device_id}".*?</li>', page, re.S)
    theirs = re.search(rf'data-device-id="{device_of(other).device_id}".*?</li>', page, re.S)
    assert mine and "This browser" in mine.group(0) and "Last seen" not in mine.group(0)
    assert theirs and "This browser" not in theirs.group(0)
    assert "Last seen 3\xa0hours ago" in theirs.group(0)


def test_a_browser_describes_only_its_own_device():
    user = UserFactory()
    other = device_of(browser(user))
    client = browser(user)
    body = {
        "device_id": other.device_id,  # not something a client may name: ignored
        "make": "Firefox 141",
        "model": "desktop",
        "platform": "Linux",
        "client_version": "web-1",
    }
    response = client.post("/devices/current/", json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    mine = device_of(client)
    assert response.json() == {"device_id": mine.device_id}
    assert mine.make == "Firefox 141"
    other.refresh_from_db()
    assert other.make == "Firefox 140"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"a string"', b'{"make": 5}'])
def test_device_description_refuses_bad_json(body):
    client = browser(UserFactory())
    before = device_of(client).make
    response = client.post("/devices/current/", body, content_type="application/json")
    assert response.status_code == 400
    assert device_of(client).make == before


def test_device_description_needs_login_and_post():
    body = json.dumps({"make": "x"})
    assert (
        Client().post("/devices/current/", body, content_type="application/json").status_code == 401
    )
    assert browser(UserFactory()).get("/devices/current/").status_code == 405


def test_forget_signs_that_browser_out_and_closes_its_sockets(django_capture_on_commit_callbacks):
    user = UserFactory()
    lost, client = browser(user), browser(user)
    target = device_of(lost)
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/devices/{target.pk}/forget/")
    assert response.status_code == 302
    assert not Device.objects.filter(pk=target.pk).exists()
    assert not signed_in(lost)  # the forgotten browser is signed out at once
    assert signed_in(client)
    close = {"type": "socket.close", "code": 4001}
    assert (device_group(target.pk), close) in events
    assert (session_group(target.session_key or ""), close) in events


def test_forget_refuses_someone_elses_device():
    stranger = browser(UserFactory())
    client = browser(UserFactory())
    client.post(f"/devices/{device_of(stranger).pk}/forget/")
    assert signed_in(stranger)


def test_forgetting_this_browser_signs_it_out():
    client = browser(UserFactory())
    response = client.post(f"/devices/{device_of(client).pk}/forget/")
    assert response["Location"] == "/"
    assert not signed_in(client)


def test_sign_out_everywhere_ends_every_session():
    user = UserFactory()
    a, b, client = browser(user), browser(user), browser(user)
    bystander = browser(UserFactory())
    client.post("/devices/sign-out-everywhere/")
    assert not any(signed_in(c) for c in (a, b, client))
    assert not Device.objects.filter(user=user).exists()
    assert signed_in(bystander)


def test_logout_ends_only_its_own_session(django_capture_on_commit_callbacks):
    user = UserFactory()
    a, b = browser(user), browser(user)
    gone, kept = device_of(a), device_of(b)
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        a.post("/accounts/logout/")
    assert not Device.objects.filter(pk=gone.pk).exists()
    assert Device.objects.filter(pk=kept.pk).exists() and signed_in(b)
    groups = {group for group, _ in events}
    assert groups == {session_group(gone.session_key or "")}


def test_password_change_keeps_this_session_and_ends_the_others():
    user = UserFactory()
    other, client = browser(user), browser(user)
    mine = device_of(client)
    response = client.post(
        "/accounts/password/change/",
        {
            "oldpassword": PASSWORD,
            "password1": "a-new-pass-phrase",
            "password2": "a-new-pass-phrase",
        },
    )
    assert response.status_code == 302
    assert signed_in(client) and not signed_in(other)
    # Django gave this session a new key; its device followed it.
    assert device_of(client).pk == mine.pk
    assert list(Device.objects.filter(user=user)) == [device_of(client)]


def test_a_session_from_before_devices_gets_one_on_its_next_request():
    user = UserFactory()
    client = Client()
    client.force_login(user)
    Device.objects.all().delete()  # as the migration left every signed-in session
    assert signed_in(client)
    assert device_of(client).user == user


def test_the_device_list_is_capped_by_signing_out_the_longest_unseen(monkeypatch):
    monkeypatch.setattr(services, "MAX_DEVICES_PER_USER", 2)
    user = UserFactory()
    oldest = browser(user)
    Device.objects.filter(pk=device_of(oldest).pk).update(
        last_seen_at=timezone.now() - dt.timedelta(days=9)
    )
    kept = browser(user)
    newest = browser(user)
    assert not signed_in(oldest)
    assert signed_in(kept) and signed_in(newest)
    assert Device.objects.filter(user=user).count() == 2
    assert Session.objects.count() == 2


def test_user_agent_descriptions():
    safari = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    assert services.describe_user_agent(safari) == {
        "make": "Safari 17",
        "model": "mobile",
        "platform": "iOS",
    }
    assert services.describe_user_agent(FIREFOX_LINUX)["make"] == "Firefox 140"
    assert services.describe_user_agent("") == {"make": "", "model": "", "platform": ""}


def test_an_expired_session_takes_its_device_and_sockets_with_it(
    django_capture_on_commit_callbacks,
):
    """A session that simply runs out (no logout) must not leave its device listed, able to
    receive CallsApp keys, or its sockets open: the beat task ends it as a logout would."""
    from accounts.tasks import sessions_expired_purge

    user = UserFactory()
    stale, fresh = browser(user), browser(user)
    old, kept = device_of(stale), device_of(fresh)
    later = timezone.now() + dt.timedelta(seconds=settings.SESSION_COOKIE_AGE + 60)
    Session.objects.filter(session_key=fresh.session.session_key).update(
        expire_date=later + dt.timedelta(days=1)
    )
    orphan = Device.objects.create(
        user=user, device_id="ORPHANDEVX", session_key=None, last_seen_at=timezone.now()
    )
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        assert sessions_expired_purge(now=later) == 2
    assert set(Device.objects.filter(user=user)) == {kept}
    assert not Device.objects.filter(pk__in=[old.pk, orphan.pk]).exists()
    assert not Session.objects.filter(session_key=old.session_key).exists()
    assert (device_group(old.pk), {"type": "socket.close", "code": 4001}) in events
    # Run again: nothing left to do; the live session is untouched.
    assert sessions_expired_purge(now=later) == 0
    assert signed_in(fresh)


def test_the_session_purge_is_on_the_beat():
    from config.celery_app import app

    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "accounts.tasks.sessions_expired_purge" in tasks
