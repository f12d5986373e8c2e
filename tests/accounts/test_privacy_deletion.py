"""Deletion, complete: inaccessible at once, every app's data gone after the grace period."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from django.contrib.sessions.models import Session
from django.db import models
from django.test import Client

from accounts import services
from accounts.models import Device, Profile, User
from accounts.privacy import registry
from accounts.privacy import services as privacy_services
from accounts.tasks import deleted_accounts_purge as purge_task
from messaging.models import (
    Bot,
    BotChat,
    BotUpdate,
    Community,
    CommunityMember,
    CommunityPost,
    MediaBlob,
    Membership,
    PostLike,
    RoomEvent,
)
from payments.models import Order
from tests.accounts.privacy_data import user_with_data_everywhere
from tests.factories import UserFactory
from videochat.models import Ban, Report
from voice.models import Channel, ChannelMembership, ChannelSanction, ConnectionLog

pytestmark = pytest.mark.django_db


def rows_referring_to(user_id: int, device_pks: Sequence[int] = ()) -> dict[str, int]:
    """For every field in every model that refers to a user (found by introspection, so a new
    model is checked too): how many rows point at this user, or at one of their devices by a
    plain id column."""
    found = {}
    for label, f in registry.user_references().items():
        model: type[models.Model] = f.model
        target = registry.id_column_target(f)
        if target == "user":
            count = model._default_manager.filter(**{f.attname: user_id}).count()
        elif target == "device":
            count = model._default_manager.filter(**{f"{f.attname}__in": list(device_pks)}).count()
        elif f.related_model is not User:
            continue  # a row the user owns: checked through its own reference to the user
        elif f.many_to_many:
            through = getattr(model, f.name).through
            column = f.m2m_reverse_field_name()
            count = through.objects.filter(**{column: user_id}).count()
        else:
            count = model._default_manager.filter(**{f.attname: user_id}).count()
        if count:
            found[label] = count
    return found


def sessions_of(user_id: int) -> int:
    return sum(
        1 for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(user_id)
    )


def test_deletion_end_to_end_with_time_moved_30_days(settings, django_capture_on_commit_callbacks):
    settings.ACCOUNT_DELETION_GRACE_DAYS = 30
    other = UserFactory(email="other@example.com")
    held = user_with_data_everywhere("leaving@example.com", other=other)
    user = held.user
    photo_url = f"/media/{Profile.objects.get(user=user).photo.name}"
    onlooker = Client()
    onlooker.force_login(other)
    assert onlooker.get(photo_url).status_code == 200
    devices = list(Device.objects.filter(user=user).values_list("pk", flat=True))
    assert set(rows_referring_to(user.pk, devices)) >= {
        "messaging.MediaBlob.uploader",
        "messaging.DeviceKeys.user",
        "realtime.StreamItem.device_pk",
        "accounts.Profile.user",
        "voice.ConnectionLog.user",
        "videochat.Report.reporter",
        "payments.Entitlement.user",
    }

    assert Client().login(email="leaving@example.com", password="correct-horse-battery")
    assert sessions_of(user.pk) == 1

    with django_capture_on_commit_callbacks(execute=True):
        services.account_delete_request(user=user)
    user.refresh_from_db()
    assert sessions_of(user.pk) == 0  # every login ended at once
    requested = user.deletion_requested_at
    assert requested is not None

    # Before the 30 days: invisible to others, and a login is refused with an explanation.
    assert onlooker.get(photo_url).status_code == 404
    response = Client().post(
        "/accounts/login/",
        {"login": "leaving@example.com", "password": "correct-horse-battery"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/accounts/inactive/"
    assert b"This account is closed" in response.content
    assert b"erased" in response.content
    with django_capture_on_commit_callbacks(execute=True):
        assert privacy_services.deleted_accounts_purge(now=requested + dt.timedelta(days=29)) == 0
    assert User.objects.filter(pk=user.pk).exists()

    # Time moves 30 days on: the beat's purge erases everything, in every app.
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            privacy_services.deleted_accounts_purge(
                now=requested + dt.timedelta(days=30, seconds=1)
            )
            == 1
        )

    assert not User.objects.filter(pk=user.pk).exists()
    assert rows_referring_to(user.pk, devices) == {}
    assert [p for p in held.files if p.exists()] == []
    # What belonged to others stays: their log rows, their membership, the ban record.
    assert ConnectionLog.objects.filter(user=other).count() == 1
    assert ChannelMembership.objects.filter(user=other).count() == 1
    # Their bot went with the other's chat with it; the other's bot stays, without their
    # chat and its waiting update.
    assert list(Bot.objects.values_list("name", flat=True)) == ["Theirs"]
    assert not BotChat.objects.exists() and not BotUpdate.objects.exists()
    assert Channel.objects.filter(creator=None).count() == 1  # theirs stays, without creator
    # Sanctions they gave and received are gone.
    assert not ChannelSanction.objects.exists()
    ban = Ban.objects.get()
    assert ban.user_id is None and not ban.image and ban.reason == "nudity"
    assert not ban.appeals.exists()
    # Only the report that led to the ban remains, unlinked and without its frame.
    kept = Report.objects.get()
    assert kept.reported_id is None and not kept.frame and kept.reporter == other
    assert User.objects.filter(pk=other.pk, is_active=True).exists()
    # CallsApp: the other member keeps the room; nothing of the user's stays in it.
    assert Membership.objects.filter(user=other).count() == 1
    assert not RoomEvent.objects.exists() and not MediaBlob.objects.exists()
    # Communities: their posts and likes are gone (the like on theirs with it); the other
    # member took over the community the user alone administered.
    assert list(CommunityPost.objects.values_list("text", flat=True)) == ["Their post"]
    assert not PostLike.objects.exists()
    club = Community.objects.get(name=f"Club {user.pk}")
    assert list(CommunityMember.objects.filter(community=club).values_list("user", "is_admin")) == [
        (other.pk, True)
    ]
    # The sale stays as the accounting record, unlinked from the account.
    sale = Order.objects.get(transaction_id="pi_kept_for_accounting")
    assert sale.user_id is None and sale.payer_email == "leaving@example.com"


def test_the_beat_task_erases_in_batches_and_is_idempotent(settings):
    settings.ACCOUNT_DELETION_GRACE_DAYS = 30
    other = UserFactory()
    for i in range(3):
        held = user_with_data_everywhere(f"gone{i}@example.com", other=other)
        services.account_delete_request(user=held.user)
    User.objects.filter(deletion_requested_at__isnull=False).update(
        deletion_requested_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    assert privacy_services.deleted_accounts_purge(batch_size=2) == 3
    assert purge_task.delay().get() == 0
    assert list(User.objects.values_list("pk", flat=True)) == [other.pk]


def test_an_erasure_that_fails_leaves_that_account_for_the_next_run(settings, monkeypatch):
    settings.ACCOUNT_DELETION_GRACE_DAYS = 30
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    first = UserFactory(is_active=False, deletion_requested_at=old)
    second = UserFactory(is_active=False, deletion_requested_at=old)
    step = registry.step_of("voice")
    assert step is not None

    def broken(*, user_id: int) -> list[object]:
        if user_id == first.pk:
            raise RuntimeError("disk on fire")
        return step.delete(user_id=user_id)

    monkeypatch.setitem(
        registry._steps,
        "voice",
        registry.PrivacyStep(
            app="voice",
            title=step.title,
            delete=broken,
            export=step.export,
            deletes=step.deletes,
            exports=step.exports,
            reasons=step.reasons,
        ),
    )
    assert privacy_services.deleted_accounts_purge() == 1
    # Nothing of the failed account was half-deleted: its transaction rolled back.
    assert User.objects.filter(pk=first.pk).exists()
    assert not User.objects.filter(pk=second.pk).exists()
    monkeypatch.undo()
    assert privacy_services.deleted_accounts_purge() == 1
