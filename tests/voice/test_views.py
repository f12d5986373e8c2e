"""The CBLINE page and its JSON endpoints, the admin's aggregate-only connection log, and the
log row a socket connect writes."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from accounts.services import device_describe
from tests.conftest import acommunicator, alogin_session
from tests.factories import DeviceFactory, UserFactory
from tests.voice.helpers import assert_alive, connect
from voice import services
from voice.models import Channel, ConnectionLog

pytestmark = pytest.mark.django_db(transaction=True)


def test_page_needs_login_and_renders(client):
    assert client.get("/cbline/").status_code == 302
    user = UserFactory()
    client.force_login(user)
    resp = client.get("/cbline/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'data-controller="cbline"' in html
    assert "voice/js/app.js" in html
    assert user.profile.nickname in html
    assert f"else at least {services.MIN_RANGE_KM})" in html


def test_the_policy_page_states_the_minimum_range(client):
    html = client.get("/privacy/cbline/").content.decode()
    assert f"A channel's range is never under {services.MIN_RANGE_KM} km" in html


def test_the_page_takes_its_timings_from_settings_alone(client, settings):
    """The client's location refresh and talk limit come from the settings (no default of
    its own that a changed setting would leave behind)."""
    settings.VOICE_LOCATION_TTL_SECONDS = 44
    settings.VOICE_MAX_TRANSMISSION_SECONDS = 17
    settings.VOICE_AUDIO_TTL_SECONDS = 23
    client.force_login(UserFactory())
    html = client.get("/cbline/").content.decode()
    assert 'data-location-ttl="44"' in html
    assert 'data-max-seconds="17"' in html and 'data-audio-ttl="23"' in html


def test_create_search_and_list_channels(client):
    user = UserFactory()
    client.force_login(user)
    resp = client.post(
        "/cbline/api/channels/",
        {"name": "Highway 61", "description": "truckers", "password": "pw-1", "range_km": "30"},
    )
    assert resp.status_code == 201, resp.content
    created = resp.json()["channel"]
    assert created["is_protected"] and created["range_km"] == 30 and created["is_member"]
    stored = Channel.objects.get(pk=created["id"])
    assert stored.password_hash and "pw-1" not in stored.password_hash
    services.channel_create(creator=UserFactory(), name="Fishing")

    assert client.post("/cbline/api/channels/", {"name": "highway 61"}).json()["code"] == (
        "name_taken"
    )
    assert client.post("/cbline/api/channels/", {"name": ""}).status_code == 400
    assert client.post("/cbline/api/channels/", {"name": "x", "range_km": "-3"}).status_code == 400

    names = [c["name"] for c in client.get("/cbline/api/channels/").json()["channels"]]
    assert names == ["Fishing", "Highway 61"]
    found = client.get("/cbline/api/channels/", {"q": "WAY"}).json()["channels"]
    assert [c["name"] for c in found] == ["Highway 61"]
    assert "password_hash" not in str(found)
    other = UserFactory()
    client.force_login(other)
    listed = client.get("/cbline/api/channels/", {"q": "high"}).json()["channels"]
    assert listed[0]["is_member"] is False


def test_identity_endpoint(client):
    user = UserFactory()
    client.force_login(user)
    resp = client.post("/cbline/api/identity/", {"nickname": "Bear", "description": "smokey"})
    assert resp.json() == {"nickname": "Bear", "description": "smokey"}
    user.profile.refresh_from_db()
    assert user.profile.nickname == "Bear"
    assert client.post("/cbline/api/identity/", {"nickname": ""}).status_code == 400


def test_admin_shows_connection_aggregates_only(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    user = UserFactory()
    device = DeviceFactory(user=user, platform="Android", client_version="web-7")
    for ip in ("8.8.8.8", "8.8.4.4", "203.0.113.9"):
        services.connection_log_write(user_id=user.pk, ip=ip, device=device)
    client.force_login(staff)
    resp = client.get("/admin/voice/connectionlog/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "Android" in html and "web-7" in html and "United States" in html
    assert "8.8.8.8" not in html and user.profile.nickname not in html and user.email not in html
    # No per-row pages.
    row = ConnectionLog.objects.first()
    assert client.get(f"/admin/voice/connectionlog/{row.pk}/change/").status_code == 404
    assert client.get("/admin/voice/connectionlog/add/").status_code == 404
    # Staff manage channels.
    assert client.get("/admin/voice/channel/add/").status_code == 200
    resp = client.post(
        "/admin/voice/channel/add/",
        {
            "name": "Staff made",
            "description": "",
            "range_km": "0",
            "new_password": "pw-2",
            "sanctions-TOTAL_FORMS": "0",
            "sanctions-INITIAL_FORMS": "0",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[:2000]
    channel = Channel.objects.get(name="Staff made")
    assert services.channel_password_check(channel=channel, password="pw-2")


async def test_socket_connect_writes_a_connection_log_row(amake_user):
    user = await amake_user()
    key, device = await alogin_session(user)
    await sync_to_async(device_describe)(
        device=device,
        make="Firefox 140",
        model="mobile",
        platform="Android",
        client_version="web-2",
    )
    comm = await connect(session_key=key, client=("8.8.8.8", 40000))
    await assert_alive(comm)  # the socket is accepted first; the row is written just after
    row = await sync_to_async(lambda: ConnectionLog.objects.get(user=user))()
    assert (row.ip, row.nickname, row.country) == ("8.8.8.8", user.profile.nickname, "US")
    # The device is the one the server issued to this session, named by nothing the client said.
    assert (row.device_uid, row.device_make, row.device_model, row.platform) == (
        device.device_id,
        "Firefox 140",
        "mobile",
        "Android",
    )
    assert row.client_version == "web-2"
    await comm.disconnect()


async def test_a_device_named_in_the_query_string_is_ignored(amake_user):
    user, other = await amake_user(), await amake_user()
    _, theirs = await alogin_session(other, "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
    key, mine = await alogin_session(user)
    comm = await acommunicator(f"/ws/cbline/?device={theirs.device_id}", session_key=key)
    assert (await comm.connect(timeout=5))[0]
    await assert_alive(comm)
    row = await sync_to_async(lambda: ConnectionLog.objects.get(user=user))()
    assert row.device_uid == mine.device_id and row.device_make != "Firefox 140"
    await comm.disconnect()
