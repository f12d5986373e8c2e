"""Admin titles read as sentences, not raw ids ("Banned 3 in 2", "report #1 against 1")."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.factories import UserFactory
from videochat.models import Ban, Report
from voice.models import ChannelMembership, ChannelSanction
from voice.services import channel_create

pytestmark = pytest.mark.django_db


def test_voice_rows_name_the_user_and_the_channel():
    owner, bob = UserFactory(email="owner@example.com"), UserFactory(email="bob@example.com")
    channel = channel_create(creator=owner, name="Night Owls")
    until = timezone.make_aware(dt.datetime(2026, 12, 1, 10, 0))
    ban = ChannelSanction.objects.create(channel=channel, user=bob, kind="ban", until=until)
    mute = ChannelSanction.objects.create(channel=channel, user=bob, kind="mute")
    member = ChannelMembership.objects.create(channel=channel, user=bob)
    assert str(ban) == "bob@example.com banned in Night Owls until 2026-12-01 10:00"
    assert str(mute) == "bob@example.com muted in Night Owls with no end"
    assert str(member) == "bob@example.com in Night Owls"


def test_video_chat_rows_name_who_and_why():
    bob = UserFactory(email="bob@example.com")
    report = Report.objects.create(reporter=None, reported=bob, reason="spam", chat_lines=[])
    assert str(report) == f"Report #{report.pk}: bob@example.com reported for spam or advertising"
    ban = Ban.objects.create(
        user=bob,
        reason="Spam",
        expires_at=timezone.make_aware(dt.datetime(2026, 12, 24, 8, 30)),
    )
    assert str(ban) == f"bob@example.com banned until 2026-12-24 08:30 (ban #{ban.pk})"
    report.reported = None
    assert "a deleted account" in str(report)
