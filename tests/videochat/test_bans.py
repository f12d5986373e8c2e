"""Reports become bans in the admin; a ban's image is deleted when it expires, the ban row
stays; staff decide appeals."""

from __future__ import annotations

import datetime as dt
import io
import os

import pytest
from allauth.socialaccount.models import SocialAccount
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from tests.factories import UserFactory
from videochat import tasks
from videochat.models import Appeal, Ban, Report
from videochat.services import appeal_create, ban_create, report_dismiss

pytestmark = pytest.mark.django_db(transaction=True)


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (0, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_report(reported, reporter=None) -> Report:  # type: ignore[no-untyped-def]
    report = Report(
        reporter=reporter or UserFactory(),
        reported=reported,
        reason="nudity",
        chat_lines=[{"from": "partner", "text": "look"}],
    )
    report.frame.save("r.jpg", ContentFile(jpeg()), save=False)
    report.save()
    return report


def test_admin_bans_for_n_days_from_reports(client):
    offender = UserFactory()
    SocialAccount.objects.create(user=offender, provider="facebook", uid="fb-9")
    SocialAccount.objects.create(user=offender, provider="vk", uid="vk-9")
    report = make_report(offender)
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    url = "/admin/videochat/report/"
    # The action first asks for the number of days...
    resp = client.post(url, {"action": "ban_for_n_days", "_selected_action": [report.pk]})
    assert resp.status_code == 200 and b'name="days"' in resp.content
    # ...then bans.
    resp = client.post(
        url,
        {
            "action": "ban_for_n_days",
            "_selected_action": [report.pk],
            "apply": "1",
            "days": "3",
            "reason": "",
        },
    )
    assert resp.status_code == 302
    ban = Ban.objects.get()
    assert ban.user == offender and ban.created_by == staff and ban.report == report
    assert (ban.facebook_uid, ban.vk_uid) == ("fb-9", "vk-9")
    assert abs((ban.expires_at - ban.starts_at) - dt.timedelta(days=3)) < dt.timedelta(seconds=1)
    assert ban.reason == "Reported for: Nudity or sexual content"
    with ban.image.open("rb") as f:
        assert f.read() == report.frame.open("rb").read()  # the report still, copied
    report.refresh_from_db()
    assert report.status == "banned"
    # The quick actions work too.
    other = make_report(UserFactory())
    client.post(url, {"action": "ban_7_days", "_selected_action": [other.pk]})
    assert Ban.objects.filter(report=other).count() == 1


def test_admin_pages_render_with_evidence_and_lines(client):
    report = make_report(UserFactory())
    ban = ban_create(
        user=report.reported,
        reason="x",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=report,
    )
    appeal_create(user=report.reported, ban=ban, text="please")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    for url in (
        f"/admin/videochat/report/{report.pk}/change/",
        f"/admin/videochat/ban/{ban.pk}/change/",
        "/admin/videochat/appeal/",
        "/admin/videochat/report/",
        "/admin/videochat/ban/",
    ):
        resp = client.get(url)
        assert resp.status_code == 200, url
    body = client.get(f"/admin/videochat/report/{report.pk}/change/").content.decode()
    assert f"/videochat/evidence/report/{report.pk}/" in body and "look" in body


def test_admin_accepts_an_appeal_and_the_ban_ends(client):
    user = UserFactory()
    ban = ban_create(user=user, reason="x", duration=dt.timedelta(days=5), created_by=None)
    appeal = appeal_create(user=user, ban=ban, text="mistake")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    client.post("/admin/videochat/appeal/", {"action": "accept", "_selected_action": [appeal.pk]})
    appeal.refresh_from_db()
    ban.refresh_from_db()
    assert appeal.status == "accepted" and not ban.is_active


def test_expired_ban_loses_its_image_and_keeps_its_row():
    offender, still_banned = UserFactory(), UserFactory()
    report = make_report(offender)
    ban = ban_create(
        user=offender,
        reason="nudity",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=report,
    )
    running = ban_create(
        user=still_banned,
        reason="spam",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=make_report(still_banned),
    )
    ban_file, frame_file = ban.image.name, report.frame.name
    assert default_storage.exists(ban_file) and default_storage.exists(frame_file)

    assert tasks.ban_images_purge.delay().get() == 0  # nothing has expired yet
    assert default_storage.exists(ban_file)

    # Move time: the day-long ban ended a second ago.
    now = timezone.now()
    Ban.objects.filter(pk=ban.pk).update(
        starts_at=now - dt.timedelta(days=1, seconds=1), expires_at=now - dt.timedelta(seconds=1)
    )
    assert tasks.ban_images_purge.delay().get() == 1
    ban.refresh_from_db()
    report.refresh_from_db()
    assert not ban.image and not report.frame
    assert not default_storage.exists(ban_file) and not default_storage.exists(frame_file)
    assert ban.reason == "nudity" and ban.user == offender  # the record stays
    running.refresh_from_db()
    assert running.image and default_storage.exists(running.image.name)
    assert tasks.ban_images_purge.delay().get() == 0  # idempotent


def test_dismissed_report_loses_its_still_and_chat_lines():
    report = make_report(UserFactory())
    name = report.frame.name
    report_dismiss(report=report, by=None)
    report.refresh_from_db()
    assert report.status == "dismissed" and not report.frame
    assert not default_storage.exists(name)
    # No ban came of it: the lines are not kept either (messages are stored only for bans).
    assert report.chat_lines == []


def test_report_evidence_goes_after_the_retention_unless_an_active_ban_rests_on_it(settings):
    settings.VIDEOCHAT_REPORT_RETENTION_DAYS = 30
    never_acted_on = make_report(UserFactory())
    ban_over = make_report(UserFactory())
    ban_create(
        user=ban_over.reported,
        reason="x",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=ban_over,
    )
    ban_running = make_report(UserFactory())
    running = ban_create(
        user=ban_running.reported,
        reason="x",
        duration=dt.timedelta(days=60),
        created_by=None,
        report=ban_running,
    )
    fresh = make_report(UserFactory())
    frames = {r.pk: r.frame.name for r in (never_acted_on, ban_over, ban_running, fresh)}

    assert tasks.report_evidence_purge.delay().get() == 0  # all filed just now

    # Move time: all but the fresh report were filed 31 days ago; the day-long ban is over.
    now = timezone.now()
    month_ago = now - dt.timedelta(days=31)
    Report.objects.exclude(pk=fresh.pk).update(created_at=month_ago)
    Ban.objects.update(starts_at=month_ago)
    Ban.objects.filter(report=ban_over).update(expires_at=month_ago + dt.timedelta(days=1))
    assert tasks.report_evidence_purge.delay().get() == 2

    for gone in (never_acted_on, ban_over):
        gone.refresh_from_db()
        assert gone.chat_lines == [] and not gone.frame
        assert not default_storage.exists(frames[gone.pk])
        assert gone.reason == "nudity"  # the row stays, without the evidence
    for kept in (ban_running, fresh):
        kept.refresh_from_db()
        assert kept.chat_lines == [{"from": "partner", "text": "look"}]
        assert default_storage.exists(frames[kept.pk])
    assert tasks.report_evidence_purge.delay().get() == 0  # idempotent

    # Once the long ban is over too, its report's evidence goes.
    Ban.objects.filter(pk=running.pk).update(expires_at=now - dt.timedelta(seconds=1))
    assert tasks.report_evidence_purge.delay().get() == 1
    ban_running.refresh_from_db()
    assert ban_running.chat_lines == [] and not ban_running.frame


def test_the_evidence_purges_are_on_the_beat():
    from config.celery_app import app

    tasks_on_beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {
        "videochat.tasks.ban_images_purge",
        "videochat.tasks.report_evidence_purge",
    } <= tasks_on_beat


def test_one_open_appeal_per_ban_is_enforced_by_the_database():
    from django.db import IntegrityError

    user = UserFactory()
    ban = ban_create(user=user, reason="x", duration=dt.timedelta(days=1), created_by=None)
    Appeal.objects.create(ban=ban, text="one")
    with pytest.raises(IntegrityError):
        Appeal.objects.create(ban=ban, text="two")


def test_media_files_are_not_named_by_the_client():
    report = make_report(UserFactory())
    ban = ban_create(
        user=report.reported,
        reason="x",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=report,
    )
    assert os.path.basename(ban.image.name) != os.path.basename(report.frame.name)


def ban_change(client, ban: Ban, expires_at: dt.datetime, reason: str = "edited"):  # type: ignore[no-untyped-def]
    local = timezone.localtime(expires_at)
    return client.post(
        f"/admin/videochat/ban/{ban.pk}/change/",
        {
            "reason": reason,
            "expires_at_0": local.strftime("%Y-%m-%d"),
            "expires_at_1": local.strftime("%H:%M:%S"),
            "appeals-TOTAL_FORMS": "0",
            "appeals-INITIAL_FORMS": "0",
            "appeals-MIN_NUM_FORMS": "0",
            "appeals-MAX_NUM_FORMS": "1000",
        },
    )


def test_admin_extending_a_ban_goes_through_the_service_and_closes_open_sockets(client):
    from realtime.events import capture_events
    from videochat.keys import videochat_user_group

    user = UserFactory()
    ban = ban_create(user=user, reason="x", duration=dt.timedelta(days=1), created_by=None)
    past = timezone.now() - dt.timedelta(hours=1)
    Ban.objects.filter(pk=ban.pk).update(starts_at=past - dt.timedelta(days=1), expires_at=past)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    with capture_events() as sent:
        resp = ban_change(client, ban, timezone.now() + dt.timedelta(days=2), reason="again")
    assert resp.status_code == 302, resp.content[-2000:]
    ban.refresh_from_db()
    assert ban.is_active and ban.reason == "again"
    # In force again: the user's open video chat sockets are told, as for a new ban.
    assert (videochat_user_group(user.pk), {"type": "videochat.banned", "ban_id": ban.pk}) in sent


def test_admin_refuses_a_ban_that_ends_before_it_starts(client):
    ban = ban_create(user=UserFactory(), reason="x", duration=dt.timedelta(days=1), created_by=None)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    resp = ban_change(client, ban, ban.starts_at - dt.timedelta(days=1))
    assert resp.status_code == 200 and b"errornote" in resp.content
    before = ban.expires_at
    ban.refresh_from_db()
    assert ban.expires_at == before and ban.reason == "x"


def test_admin_deleting_a_ban_deletes_its_image(client):
    report = make_report(UserFactory())
    ban = ban_create(
        user=report.reported,
        reason="x",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=report,
    )
    image = ban.image.name
    assert image and default_storage.exists(image)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    resp = client.post(f"/admin/videochat/ban/{ban.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 302
    assert not Ban.objects.filter(pk=ban.pk).exists()
    assert not default_storage.exists(image)
    # The bulk action too.
    other = ban_create(
        user=make_report(UserFactory()).reported,
        reason="x",
        duration=dt.timedelta(days=1),
        created_by=None,
        report=Report.objects.exclude(pk=report.pk).latest("pk"),
    )
    other_image = other.image.name
    client.post(
        "/admin/videochat/ban/",
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert not Ban.objects.filter(pk=other.pk).exists()
    assert not default_storage.exists(other_image)


def test_admin_deleting_a_report_deletes_its_still(client):
    report = make_report(UserFactory())
    still = report.frame.name
    assert default_storage.exists(still)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    resp = client.post(f"/admin/videochat/report/{report.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 302
    assert not Report.objects.filter(pk=report.pk).exists()
    assert not default_storage.exists(still)
    other = make_report(UserFactory())
    other_still = other.frame.name
    client.post(
        "/admin/videochat/report/",
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert not Report.objects.filter(pk=other.pk).exists()
    assert not default_storage.exists(other_still)
