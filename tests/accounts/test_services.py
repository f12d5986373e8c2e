from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts import services
from accounts.models import Device, Gender, Profile, User
from accounts.privacy import services as privacy_services
from accounts.tasks import deleted_accounts_purge as purge_task
from realtime.errors import ServiceError
from realtime.events import capture_events
from tests.factories import DeviceFactory, UserFactory

pytestmark = pytest.mark.django_db


def png(size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (255, 138, 31)).save(buf, fmt)
    return buf.getvalue()


# --- profile


def test_profile_update_saves_and_refuses_unknown_fields():
    user = UserFactory()
    services.profile_update(user=user, data={"nickname": "Rocket", "country": "FR"})
    user.profile.refresh_from_db()
    assert (user.profile.nickname, user.profile.country) == ("Rocket", "FR")
    with pytest.raises(ServiceError):
        services.profile_update(user=user, data={"user_id": 5})


def test_hiding_online_status_tells_watchers_at_once(django_capture_on_commit_callbacks):
    user = UserFactory()
    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        services.profile_update(user=user, data={"nickname": "still visible"})
        services.profile_update(user=user, data={"show_online_status": False})
        services.profile_update(user=user, data={"show_online_status": False})
    offline = {"type": "presence.update", "user_id": user.pk, "online": False}
    assert events == [(f"presence.{user.pk}", offline)]


def test_profile_update_validates_the_photo_even_without_a_form():
    user = UserFactory()
    fake = SimpleUploadedFile("x.png", b"not an image", content_type="image/png")
    with pytest.raises(ValidationError):
        services.profile_update(user=user, data={"photo": fake})


def test_replacing_the_photo_deletes_the_old_file(settings, django_capture_on_commit_callbacks):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        first = services.profile_update(
            user=user, data={"photo": SimpleUploadedFile("a.png", png(), "image/png")}
        )
    old_path = Path(first.photo.path)
    assert old_path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        second = services.profile_update(
            user=user, data={"photo": SimpleUploadedFile("b.png", png(), "image/png")}
        )
    assert not old_path.exists()
    assert Path(second.photo.path).exists()


def test_provider_data_fills_only_what_the_user_left_empty():
    user = UserFactory()
    profile = user.profile
    profile.gender, profile.country, profile.birth_date = Gender.FEMALE, "", None
    profile.save()
    filled = services.profile_fill_from_provider(
        user=user,
        provider="vk",
        extra_data={"sex": 2, "birthday": "05.06.1990", "country": {"title": "Germany"}},
    )
    profile.refresh_from_db()
    assert sorted(filled) == ["birth_date", "country"]
    assert profile.gender == Gender.FEMALE
    assert (profile.birth_date, profile.country) == (dt.date(1990, 6, 5), "DE")


def test_country_guess_from_ip_only_when_unset():
    user = UserFactory()
    user.profile.country = ""
    user.profile.save()
    assert services.profile_country_guess(user=user, ip="127.0.0.1") == ""
    assert services.profile_country_guess(user=user, ip="not an ip") == ""
    assert services.profile_country_guess(user=user, ip="8.8.8.8") == "US"
    assert services.profile_country_guess(user=user, ip="77.88.55.60") == "US"  # kept


# --- deletion: inaccessible at once, purged after the grace period


def test_delete_request_makes_the_account_inaccessible_at_once(django_capture_on_commit_callbacks):
    user = UserFactory(email="gone@example.com")
    client = Client()
    client.force_login(user)
    assert client.get("/profile/").status_code == 200

    with capture_events() as events, django_capture_on_commit_callbacks(execute=True):
        services.account_delete_request(user=user)

    user.refresh_from_db()
    assert not user.is_active and user.deletion_requested_at is not None
    # The open session no longer authenticates; a new login is refused.
    assert client.get("/profile/").status_code == 302
    assert not Client().login(email="gone@example.com", password="correct-horse-battery")
    # Every open socket of the user is told to close, for good.
    assert (f"user.{user.pk}", {"type": "socket.close", "code": 4403}) in events


def test_purge_erases_old_requests_and_keeps_younger_ones(
    settings, django_capture_on_commit_callbacks
):
    settings.ACCOUNT_DELETION_GRACE_DAYS = 30
    now = timezone.now()
    old = UserFactory(email="old@example.com")
    young = UserFactory(email="young@example.com")
    active = UserFactory(email="active@example.com")
    DeviceFactory(user=old)
    SocialAccount.objects.create(user=old, provider="vk", uid="1", extra_data={"sex": 2})
    EmailAddress.objects.create(user=old, email="old@example.com", primary=True, verified=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.profile_update(
            user=old, data={"photo": SimpleUploadedFile("p.png", png(), "image/png")}
        )
    photo = Path(Profile.objects.get(user=old).photo.path)
    for user in (old, young):
        services.account_delete_request(user=user)
    # Move time: the old request is 31 days old, the young one 29.
    User.objects.filter(pk=old.pk).update(deletion_requested_at=now - dt.timedelta(days=31))
    User.objects.filter(pk=young.pk).update(deletion_requested_at=now - dt.timedelta(days=29))

    with django_capture_on_commit_callbacks(execute=True):
        assert privacy_services.deleted_accounts_purge(now=now) == 1

    assert not User.objects.filter(pk=old.pk).exists()
    assert not Profile.objects.filter(user_id=old.pk).exists()
    assert not Device.objects.filter(user_id=old.pk).exists()
    assert not SocialAccount.objects.filter(user_id=old.pk).exists()
    assert not EmailAddress.objects.filter(email="old@example.com").exists()
    assert not photo.exists()
    assert User.objects.filter(pk__in=[young.pk, active.pk]).count() == 2
    # Two days later the young one goes too; an active account never does.
    assert privacy_services.deleted_accounts_purge(now=now + dt.timedelta(days=2)) == 1
    assert list(User.objects.values_list("email", flat=True)) == ["active@example.com"]


def test_purge_works_in_batches_and_the_beat_task_runs_it(settings):
    settings.ACCOUNT_DELETION_GRACE_DAYS = 30
    long_ago = timezone.now() - dt.timedelta(days=40)
    for _ in range(5):
        UserFactory(is_active=False, deletion_requested_at=long_ago)
    assert privacy_services.deleted_accounts_purge(batch_size=2) == 5
    UserFactory(is_active=False, deletion_requested_at=long_ago)
    assert purge_task.delay().get() == 1
    assert purge_task.delay().get() == 0  # idempotent
    assert not User.objects.exists()


def test_staff_can_restore_before_the_purge():
    user = UserFactory()
    services.account_delete_request(user=user)
    services.account_deletion_cancel(user=user)
    user.refresh_from_db()
    assert user.is_active and user.deletion_requested_at is None
