"""Export (portability): a Celery job builds a ZIP of JSON with a schema version, holding
every app's data; progress is shown; the link expires; exports are rate-limited."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import DataExport
from accounts.privacy import registry
from accounts.privacy import services as privacy_services
from accounts.tasks import data_exports_expire
from tests.accounts.privacy_data import user_with_data_everywhere
from tests.accounts.test_privacy_deletion import rows_referring_to
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def built_export(client: Client, capture: Any) -> DataExport:
    with capture(execute=True):
        response = client.post("/privacy/export/")
    assert response.status_code == 302
    return DataExport.objects.latest("created_at")


def archive_of(client: Client, export: DataExport) -> zipfile.ZipFile:
    status = client.get(f"/privacy/export/{export.pk}/status/").json()
    assert status["status"] == "ready" and status["percent"] == 100
    response = client.get(status["download_url"])
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="my-data-')
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_the_export_holds_every_apps_data(django_capture_on_commit_callbacks):
    other = UserFactory()
    held = user_with_data_everywhere("me@example.com", other=other)
    client = Client()
    client.force_login(held.user)

    archive = archive_of(client, built_export(client, django_capture_on_commit_callbacks))

    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["schema"] == "comms-platform-export"
    assert manifest["schema_version"] == 1
    assert manifest["user_id"] == held.user.pk
    docs = {app: json.loads(archive.read(f"{app}.json")) for app in manifest["apps"]}
    assert all(doc["schema_version"] == 1 for doc in docs.values())
    c = {app: doc["collections"] for app, doc in docs.items()}
    assert c["accounts"]["account"][0]["email"] == "me@example.com"
    assert c["accounts"]["devices"][0]["make"] == "Firefox 140"
    assert c["accounts"]["linked_logins"][0]["data"] == {"sex": 2, "city": "Kazan"}
    assert c["voice"]["connection_log"][0]["ip"] == "203.0.113.9"
    # The policy's "unique user identifier" is collected, so it is theirs to take too.
    assert c["voice"]["connection_log"][0]["device_uid"] == "d3v1ce0f7he0wner"
    assert {m["channel"] for m in c["voice"]["memberships"]} == {f"theirs-{held.user.pk}"}
    assert c["voice"]["sanctions_given"][0]["kind"] == "ban"
    assert c["videochat"]["reports_filed"][0]["reason"] == "spam"
    assert c["videochat"]["appeals"][0]["text"] == "It was not me"
    assert c["payments"]["entitlements"][0]["product"] == "Premium"
    assert c["payments"]["orders"][0]["transaction_id"] == "pi_kept_for_accounting"
    assert c["accounts"]["contact_messages"][0]["message"] == "What do you keep?"
    # CallsApp communities: memberships with role and mute, their posts, their likes.
    memberships = {m["community"]: m for m in c["messaging"]["callsapp_community_memberships"]}
    assert memberships[f"Club {held.user.pk}"]["role"] == "admin"
    assert memberships[f"News {held.user.pk}"]["muted"] is True
    assert [p["text"] for p in c["messaging"]["callsapp_community_posts"]] == ["My post"]
    assert [x["post_text"] for x in c["messaging"]["callsapp_community_likes"]] == ["Their post"]
    # CallsApp bots: their chat with the other's bot, and their own bot (no token hash).
    (bot_chat,) = c["messaging"]["callsapp_bot_chats"]
    assert [m["text"] for m in bot_chat["messages"]] == ["Hello their bot"]
    (own_bot,) = c["messaging"]["callsapp_bots"]
    assert (own_bot["name"], own_bot["chats"]) == ("Mine", 1)
    assert "token_hash" not in own_bot
    # Nothing of the other user's: their log row, their IP.
    assert b"198.51.100.1" not in b"".join(archive.read(n) for n in archive.namelist())
    # The photo and the images are in the archive, byte for byte.
    photo = held.files[0]
    names = archive.namelist()
    (in_zip,) = [n for n in names if n.startswith("files/accounts/") and n.endswith(".png")]
    assert archive.read(in_zip) == Path(photo).read_bytes()

    # Every field that refers to the user (found by introspection) and has rows for them is
    # exported by some app's step, whose file in the archive holds data; or has a reason.
    for label in rows_referring_to(held.user.pk):
        step = next((s for s in registry.steps() if label in s.exports), None)
        if step is None:
            assert any(label in s.reasons for s in registry.steps()), label
            continue
        assert any(c[step.app].values()), f"{label}: {step.app} exported nothing"
    assert registry.coverage_gaps() == []


def test_progress_is_saved_after_each_app(django_capture_on_commit_callbacks, monkeypatch):
    user = UserFactory()
    seen: list[tuple[str, int, int]] = []

    def probe(*, user_id: int) -> registry.ExportPart:
        export = DataExport.objects.get(user_id=user_id)
        seen.append((export.status, export.steps_done, export.steps_total))
        return registry.ExportPart({"probe": []})

    probe_step = registry.PrivacyStep(
        app="zz_probe", title="Probe", delete=lambda **_: [], export=probe, order=500
    )
    monkeypatch.setitem(registry._steps, "zz_probe", probe_step)
    client = Client()
    client.force_login(user)
    export = built_export(client, django_capture_on_commit_callbacks)

    total = len(registry.steps())
    position = [s.app for s in registry.steps()].index("zz_probe")
    assert seen == [("running", position, total)]
    export.refresh_from_db()
    assert (export.status, export.steps_done, export.percent) == ("ready", total, 100)


def test_the_page_follows_the_progress():
    user = UserFactory()
    export = DataExport.objects.create(
        user=user, token="t1", steps_total=4, steps_done=1, status="running"
    )
    client = Client()
    client.force_login(user)
    page = client.get("/privacy/my-data/").content.decode()
    assert f'data-export-status-url="/privacy/export/{export.pk}/status/"' in page
    assert 'value="25"' in page
    state = client.get(f"/privacy/export/{export.pk}/status/").json()
    assert (state["status"], state["percent"], state["download_url"]) == ("running", 25, None)
    # Another user's export is nobody else's business.
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.get(f"/privacy/export/{export.pk}/status/").status_code == 404
    assert Client().get(f"/privacy/export/{export.pk}/status/").status_code == 401


def test_exports_are_rate_limited(settings, django_capture_on_commit_callbacks):
    settings.PRIVACY_EXPORT_MIN_INTERVAL_HOURS = 24
    user = UserFactory()
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        first = privacy_services.data_export_request(user=user, now=now)
    with pytest.raises(privacy_services.ServiceError) as refused:
        privacy_services.data_export_request(user=user, now=now + dt.timedelta(hours=23))
    assert refused.value.code == "export_rate_limited"
    assert "every 24 hours" in refused.value.detail
    # The page says so, and makes nothing.
    client = Client()
    client.force_login(user)
    response = client.post("/privacy/export/", follow=True)
    assert b"every 24 hours" in response.content
    assert DataExport.objects.filter(user=user).count() == 1
    # A failed export does not count; time passing lifts the limit.
    DataExport.objects.filter(pk=first.pk).update(status="failed")
    privacy_services.data_export_request(user=user, now=now + dt.timedelta(hours=1))
    with pytest.raises(privacy_services.ServiceError) as busy:
        privacy_services.data_export_request(user=user, now=now + dt.timedelta(hours=30))
    assert busy.value.code == "export_busy"


def test_the_download_link_is_the_owners_and_expires(settings, django_capture_on_commit_callbacks):
    settings.PRIVACY_EXPORT_LINK_HOURS = 48
    user = UserFactory()
    client = Client()
    client.force_login(user)
    export = built_export(client, django_capture_on_commit_callbacks)
    url = f"/privacy/export/download/{export.token}/"
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page
    assert client.get(url).status_code == 200
    stored = Path(export.file.path)
    assert stored.exists() and settings.MEDIA_ROOT not in str(stored)

    # 48 hours on, the beat task deletes the archive and the link says it expired.
    DataExport.objects.filter(pk=export.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert client.get(url).status_code == 410
    with django_capture_on_commit_callbacks(execute=True):
        assert data_exports_expire.delay().get() == 1
    assert not stored.exists()
    export.refresh_from_db()
    assert export.status == "expired" and not export.file
    assert data_exports_expire.delay().get() == 0  # idempotent


def test_a_deleted_account_loses_its_archives(django_capture_on_commit_callbacks):
    user = UserFactory()
    client = Client()
    client.force_login(user)
    stored = Path(built_export(client, django_capture_on_commit_callbacks).file.path)
    with django_capture_on_commit_callbacks(execute=True):
        privacy_services.user_data_erase(user_id=user.pk)
    assert not stored.exists()
    assert not DataExport.objects.exists()


def test_what_we_hold_lists_it_all_and_links_to_export_and_delete():
    other = UserFactory()
    held = user_with_data_everywhere("shown@example.com", other=other)
    client = Client()
    client.force_login(held.user)
    page = client.get("/privacy/my-data/").content.decode()
    for expected in (
        "shown@example.com",  # profile
        "Firefox 140",  # devices
        "Kazan",  # linked logins
        "203.0.113.9",  # CBLINE connection log
        "pi_kept_for_accounting",  # payments (orders)
        "Premium",  # entitlements
        "Callsapp messages awaiting delivery",  # CallsApp pending envelopes, with expiry
        "Callsapp waiting for your devices",
        "expires_at",
        'action="/privacy/export/"',
        'href="/profile/delete/"',
    ):
        assert expected in page, expected
    assert "198.51.100.1" not in page
    assert Client().get("/privacy/my-data/").status_code == 302
