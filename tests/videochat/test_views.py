"""The /videochat/ pages and the report endpoint, through Django's test client on the real
URLconf, with matchmaking's real Redis state behind the report."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image

from tests.factories import UserFactory, grant_premium
from videochat import matchmaking as mm
from videochat.models import Appeal, Ban, Report
from videochat.services import ban_create

pytestmark = pytest.mark.django_db(transaction=True)


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def frame(fmt: str = "JPEG", name: str = "still.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(fmt), content_type="image/jpeg")


def paired(a, b) -> str:  # type: ignore[no-untyped-def]
    """a waits, b arrives: a real pair in matchmaking; returns the match id."""
    assert mm.enqueue_sync(mm.Seeker(a.pk, "specific.a!1", "", "", None, None)) is None
    found = mm.enqueue_sync(mm.Seeker(b.pk, "specific.b!1", "", "", None, None))
    assert found is not None and found.partner_id == a.pk
    return found.match_id


# --- the page
def test_signed_out_gets_login_with_facebook_and_vk(client, settings):
    providers = copy.deepcopy(settings.SOCIALACCOUNT_PROVIDERS)
    for provider in ("facebook", "vk"):
        providers[provider]["APPS"] = [{"client_id": f"{provider}-app", "secret": "s"}]
    settings.SOCIALACCOUNT_PROVIDERS = providers  # restored after the test
    resp = client.get("/videochat/")
    assert resp.status_code == 200
    assert "videochat/login.html" in [t.name for t in resp.templates]
    body = resp.content.decode()
    assert "/accounts/facebook/login/" in body and "/accounts/vk/login/" in body
    assert "next=%2Fvideochat%2F" in body


def test_under_18_and_unknown_age_get_the_age_page(client):
    today = timezone.localdate()
    for birth in (today.replace(year=today.year - 17), None):
        client.force_login(UserFactory(profile__birth_date=birth))
        resp = client.get("/videochat/")
        assert resp.status_code == 403
        assert "videochat/age_restricted.html" in [t.name for t in resp.templates]


def test_adult_gets_the_chat_page_with_its_context(client, settings):
    user = UserFactory(profile__gender="f", profile__language="de")
    client.force_login(user)
    resp = client.get("/videochat/")
    assert resp.status_code == 200
    assert "videochat/index.html" in [t.name for t in resp.templates]
    assert resp.context["filters_allowed"] is False
    assert str(resp.context["me_country"]) == ""  # loopback has no country
    assert resp.context["profile"].gender == "f"
    grant_premium(user)
    settings.VIDEOCHAT_TRUSTED_PROXIES = ["127.0.0.1"]
    resp = client.get("/videochat/", HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert resp.context["filters_allowed"] is True
    assert resp.context["me_country"].code == "US" and resp.context["me_country"].flag == "🇺🇸"


def test_settings_form_saves_language_and_translation(client):
    user = UserFactory()
    client.force_login(user)
    resp = client.post(
        "/videochat/settings/", {"gender": "m", "language": "ru", "translation_target": "en"}
    )
    assert resp.status_code == 302
    user.profile.refresh_from_db()
    assert (user.profile.gender, user.profile.language, user.profile.translation_target) == (
        "m",
        "ru",
        "en",
    )
    resp = client.post(
        "/videochat/settings/", {"language": "not a code!"}, HTTP_ACCEPT="application/json"
    )
    assert resp.status_code == 400


# --- banned page and appeal
def test_banned_user_sees_reason_countdown_and_can_appeal_once(client):
    user = UserFactory()
    ban = ban_create(
        user=user, reason="Nudity on camera", duration=dt.timedelta(days=2), created_by=None
    )
    client.force_login(user)
    resp = client.get("/videochat/")
    assert resp.status_code == 403
    body = resp.content.decode()
    assert "Nudity on camera" in body
    left = int(body.split('data-seconds-left="', 1)[1].split('"', 1)[0])
    assert 2 * 86400 - 5 <= left <= 2 * 86400
    assert ban.expires_at.isoformat() in body  # the <time datetime> of the expiry
    assert "videochat/js/ban-countdown.js" in body
    assert 'data-testid="appeal-form"' in body

    resp = client.post("/videochat/appeal/", {"text": "It was my cat, not me."}, follow=True)
    assert resp.status_code == 403  # back on the banned page
    assert 'data-testid="appeal-open"' in resp.content.decode()
    assert 'data-testid="appeal-form"' not in resp.content.decode()
    appeal = Appeal.objects.get()
    assert appeal.ban == ban and appeal.status == "open"

    client.post("/videochat/appeal/", {"text": "again"})
    assert Appeal.objects.count() == 1


def test_accepted_appeal_lifts_the_ban(client):
    from videochat.services import appeal_create, appeal_decide

    user = UserFactory()
    ban = ban_create(user=user, reason="x", duration=dt.timedelta(days=2), created_by=None)
    appeal = appeal_create(user=user, ban=ban, text="sorry")
    appeal_decide(appeal=appeal, accept=True, by=None)
    client.force_login(user)
    assert client.get("/videochat/").status_code == 200
    assert Ban.objects.filter(pk=ban.pk).exists()  # the record stays


def test_page_refuses_account_behind_a_banned_facebook_id(client):
    from allauth.socialaccount.models import SocialAccount

    old, new = UserFactory(), UserFactory()
    SocialAccount.objects.create(user=old, provider="facebook", uid="77")
    SocialAccount.objects.create(user=new, provider="vk", uid="5")
    ban_create(user=old, reason="spam", duration=dt.timedelta(days=1), created_by=None)
    # The Facebook profile is unlinked from the old account and used for a new one.
    SocialAccount.objects.filter(user=old).delete()
    SocialAccount.objects.create(user=new, provider="facebook", uid="77")
    client.force_login(new)
    resp = client.get("/videochat/")
    assert resp.status_code == 403 and "spam" in resp.content.decode()


# --- reports
def test_report_about_the_current_partner(client):
    me, partner, bystander = UserFactory(), UserFactory(), UserFactory()
    paired(me, partner)
    client.force_login(me)
    lines = [{"from": "partner", "text": "rude words"}, {"from": "me", "text": "stop"}]
    resp = client.post(
        "/videochat/report/",
        # The client cannot choose whom the report is about: an extra field is ignored.
        {
            "reason": "harassment",
            "chat_lines": json.dumps(lines),
            "frame": frame(),
            "reported": bystander.pk,
        },
    )
    assert resp.status_code == 201, resp.content
    report = Report.objects.get(pk=resp.json()["report_id"])
    assert report.reporter == me and report.reported == partner
    assert report.chat_lines == lines and report.status == "open"
    assert report.frame.name.endswith(".jpg") and "still" not in report.frame.name
    with report.frame.open("rb") as f:
        assert Image.open(f).format == "JPEG"


def test_report_after_next_is_about_the_last_partner(client):
    me, partner = UserFactory(), UserFactory()
    paired(me, partner)
    assert mm.end_match_sync(me.pk, skip=True) is not None
    client.force_login(me)
    resp = client.post("/videochat/report/", {"reason": "nudity", "frame": frame("PNG", "a.png")})
    assert resp.status_code == 201
    report = Report.objects.get()
    assert report.reported == partner and report.frame.name.endswith(".png")


def test_report_without_any_partner_is_refused(client):
    client.force_login(UserFactory())
    resp = client.post("/videochat/report/", {"reason": "spam"})
    assert resp.status_code == 409 and resp.json()["error"] == "no_partner"
    assert Report.objects.count() == 0


def test_report_validates_image_type_and_size_and_caps_lines(client, settings):
    me, partner = UserFactory(), UserFactory()
    paired(me, partner)
    client.force_login(me)
    gif = SimpleUploadedFile("a.gif", image_bytes("GIF"), content_type="image/gif")
    resp = client.post("/videochat/report/", {"reason": "spam", "frame": gif})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_frame"
    text = SimpleUploadedFile("a.jpg", b"not an image at all", content_type="image/jpeg")
    resp = client.post("/videochat/report/", {"reason": "spam", "frame": text})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_frame"
    settings.VIDEOCHAT_REPORT_MAX_FRAME_BYTES = 100
    resp = client.post("/videochat/report/", {"reason": "spam", "frame": frame()})
    assert resp.status_code == 400 and resp.json()["error"] == "frame_too_large"
    resp = client.post("/videochat/report/", {"reason": "bogus"})
    assert resp.status_code == 400
    assert Report.objects.count() == 0

    lines = [{"from": "partner", "text": f"{i} " + "x" * 900} for i in range(80)]
    resp = client.post("/videochat/report/", {"reason": "spam", "chat_lines": json.dumps(lines)})
    assert resp.status_code == 201
    kept = Report.objects.get().chat_lines
    assert len(kept) == 50 and kept[0]["text"].startswith("30 ")  # the newest 50
    assert all(len(line["text"]) == 500 for line in kept)


def test_report_needs_sign_in(client):
    resp = client.post("/videochat/report/", {"reason": "spam"})
    assert resp.status_code == 401


def test_evidence_is_for_staff_only(client):
    me, partner = UserFactory(), UserFactory()
    paired(me, partner)
    client.force_login(me)
    report_id = client.post("/videochat/report/", {"reason": "spam", "frame": frame()}).json()[
        "report_id"
    ]
    url = f"/videochat/evidence/report/{report_id}/"
    assert client.get(url).status_code == 302  # to the admin login
    client.force_login(UserFactory(is_staff=True))
    resp = client.get(url)
    assert resp.status_code == 200
    assert b"".join(resp.streaming_content) == Report.objects.get().frame.open("rb").read()
    assert "no-store" in resp["Cache-Control"]


def test_reports_are_rate_limited(client, settings):
    settings.VIDEOCHAT_REPORTS_PER_HOUR = 2
    me, partner = UserFactory(), UserFactory()
    paired(me, partner)
    client.force_login(me)
    codes = [client.post("/videochat/report/", {"reason": "spam"}).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert Report.objects.count() == 2


def test_report_about_a_partner_who_deleted_their_account(client):
    me, partner = UserFactory(), UserFactory()
    paired(me, partner)
    partner.delete()
    client.force_login(me)
    resp = client.post("/videochat/report/", {"reason": "spam"})
    assert resp.status_code == 409 and resp.json()["error"] == "no_partner"
