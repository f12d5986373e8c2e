"""CBLINE services on the real database: channels and their passwords, moderation rules,
identity, and the connection log with its retention."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from realtime.errors import ServiceError
from realtime.events import capture_events
from tests.factories import DeviceFactory, UserFactory
from voice import services
from voice.keys import voice_user_group
from voice.models import Channel, ChannelMembership, ConnectionLog
from voice.tasks import connection_log_purge

pytestmark = pytest.mark.django_db(transaction=True)


def test_channel_password_is_stored_hashed():
    creator = UserFactory()
    channel = services.channel_create(creator=creator, name="Night Owls", password="s3cret!")
    channel.refresh_from_db()
    assert channel.is_protected
    assert "s3cret!" not in channel.password_hash
    # Hashed with the join-sized scheme (a pepper outside the database), not plain text.
    assert channel.password_hash.startswith(services.CHANNEL_HASH_ALGORITHM + "$")
    assert services.channel_password_check(channel=channel, password="s3cret!")
    assert not services.channel_password_check(channel=channel, password="s3cret")
    assert not services.channel_password_check(channel=channel, password=None)
    # The creator is member and moderator.
    assert list(channel.moderators.all()) == [creator]
    assert ChannelMembership.objects.filter(channel=channel, user=creator).exists()


def test_a_ranged_channel_is_never_narrower_than_the_minimum_range():
    """A narrow range would tell members whether a talker is within a few km of them: a few
    accounts at chosen points could place the talker. Ranged channels stay coarse."""
    creator = UserFactory()
    for narrow in (1, 10, services.MIN_RANGE_KM - 1):
        with pytest.raises(ServiceError) as refused:
            services.channel_create(creator=creator, name=f"Narrow {narrow}", range_km=narrow)
        assert refused.value.code == "invalid"
        assert f"at least {services.MIN_RANGE_KM} km" in refused.value.detail
    assert not Channel.objects.filter(name__startswith="Narrow").exists()
    assert services.MIN_RANGE_KM >= 25
    wide = services.channel_create(creator=creator, name="Wide", range_km=services.MIN_RANGE_KM)
    unlimited = services.channel_create(creator=creator, name="Everywhere", range_km=0)
    assert (wide.range_km, unlimited.range_km) == (services.MIN_RANGE_KM, 0)
    with pytest.raises(ServiceError):
        services.channel_update(
            channel_id=wide.pk,
            name="Wide",
            description="",
            range_km=2,
            creator=creator,
            moderators=[creator],
        )


def test_public_channel_has_no_hash():
    channel = services.channel_create(creator=UserFactory(), name="Open", range_km=50)
    assert channel.password_hash == "" and not channel.is_protected and channel.range_km == 50


def test_channel_names_are_unique_regardless_of_case():
    services.channel_create(creator=UserFactory(), name="Truckers")
    with pytest.raises(ServiceError) as exc:
        services.channel_create(creator=UserFactory(), name="  truckers ")
    assert exc.value.code == "name_taken"
    assert Channel.objects.count() == 1


@pytest.mark.parametrize(("name", "range_km"), [("", 0), ("x" * 65, 0), ("ok", -1), ("ok", 10**6)])
def test_channel_create_validates(name, range_km):
    with pytest.raises(ServiceError):
        services.channel_create(creator=UserFactory(), name=name, range_km=range_km)


def test_join_protected_channel_wants_the_right_password():
    channel = services.channel_create(creator=UserFactory(), name="Club", password="open-sesame")
    user = UserFactory()
    for wrong, code in (
        (None, "password_required"),
        ("", "password_required"),
        ("x", "wrong_password"),
    ):
        with pytest.raises(ServiceError) as exc:
            services.channel_join(channel_id=channel.pk, user=user, password=wrong)
        assert exc.value.code == code
    assert not ChannelMembership.objects.filter(channel=channel, user=user).exists()
    services.channel_join(channel_id=channel.pk, user=user, password="open-sesame")
    # A member rejoins without the password.
    services.channel_join(channel_id=channel.pk, user=user, password=None)


def test_join_public_channel_and_unknown_channel():
    channel = services.channel_create(creator=UserFactory(), name="Lobby")
    user = UserFactory()
    assert services.channel_join(channel_id=channel.pk, user=user, password=None) == channel
    with pytest.raises(ServiceError) as exc:
        services.channel_join(channel_id=channel.pk + 100, user=user, password=None)
    assert exc.value.code == "not_found"


def test_ban_removes_membership_and_blocks_rejoin_until_it_runs_out():
    mod, user = UserFactory(), UserFactory()
    channel = services.channel_create(creator=mod, name="Mods", password="pw")
    services.channel_join(channel_id=channel.pk, user=user, password="pw")
    with capture_events() as events:
        result = services.channel_member_moderate(
            channel_id=channel.pk, moderator=mod, target_id=user.pk, action="ban", minutes=5
        )
    assert result.action == "banned" and result.until is not None
    assert [g for g, _ in events] == [voice_user_group(user.pk)]
    assert not ChannelMembership.objects.filter(channel=channel, user=user).exists()
    with pytest.raises(ServiceError) as exc:
        services.channel_join(channel_id=channel.pk, user=user, password="pw")
    assert exc.value.code == "banned"
    channel.sanctions.update(until=timezone.now() - dt.timedelta(seconds=1))
    services.channel_join(channel_id=channel.pk, user=user, password="pw")


def test_moderation_rules():
    creator, mod, user = UserFactory(), UserFactory(), UserFactory()
    channel = services.channel_create(creator=creator, name="Rules")
    channel.moderators.add(mod)

    def moderate(by, target, action="kick"):  # type: ignore[no-untyped-def]
        return services.channel_member_moderate(
            channel_id=channel.pk, moderator=by, target_id=target.pk, action=action
        )

    with pytest.raises(ServiceError) as exc:
        moderate(user, mod)
    assert exc.value.code == "forbidden"
    with pytest.raises(ServiceError):
        moderate(mod, mod)  # not oneself
    with pytest.raises(ServiceError):
        moderate(mod, creator)  # not the creator
    assert moderate(mod, user, "mute").action == "muted"
    assert moderate(mod, user, "mute").until is None  # minutes 0 = until lifted
    with pytest.raises(ServiceError):
        moderate(mod, user, "explode")


def test_identity_update_sets_profile_and_announces():
    user = UserFactory()
    with capture_events() as events:
        profile = services.identity_update(
            user=user, nickname="  Rubber   Duck ", description="10-4"
        )
    assert (profile.nickname, profile.description) == ("Rubber Duck", "10-4")
    assert events == [(voice_user_group(user.pk), {"type": "voice.identity.changed"})]
    with pytest.raises(ServiceError):
        services.identity_update(user=user, nickname="   ")


def test_connection_log_row_has_every_field():
    user = UserFactory()
    device = DeviceFactory(
        user=user,
        device_id="DEVABCDEFG",
        make="Chromium 156",
        model="desktop",
        platform="Linux",
        client_version="web-1",
    )
    row = services.connection_log_write(user_id=user.pk, ip="8.8.8.8", device=device)
    row.refresh_from_db()
    assert row.created_at is not None
    assert (row.ip, row.nickname, row.user_id) == ("8.8.8.8", user.profile.nickname, user.pk)
    assert row.device_uid == "DEVABCDEFG"
    assert (row.device_make, row.device_model, row.platform, row.client_version) == (
        "Chromium 156",
        "desktop",
        "Linux",
        "web-1",
    )
    assert row.country == "US"


def test_connection_log_without_device_or_country():
    user = UserFactory()
    row = services.connection_log_write(user_id=user.pk, ip="127.0.0.1")
    assert row.device_make == "" and row.platform == "" and row.country == ""
    assert row.device_uid == ""
    row = services.connection_log_write(user_id=user.pk, ip="bogus")
    assert row.ip is None


def test_connection_log_batch_writes_each_row_under_its_own_key():
    """Several connects' rows in one statement: each entry gets the key of its own row
    (the batch's rows come back in order), nulls and blanks included."""
    users = [UserFactory() for _ in range(3)]
    device = DeviceFactory(user=users[1], device_id="DEVBATCH01", platform="Linux")
    entries = [
        services._connection_log_entry(
            user_id=users[0].pk, ip="8.8.8.8", device=None, nickname="a"
        ),
        services._connection_log_entry(user_id=users[1].pk, ip=None, device=device, nickname=""),
        services._connection_log_entry(user_id=users[2].pk, ip="bogus", device=None, nickname="c"),
    ]
    services._connection_log_insert(entries)
    rows = {r.pk: r for r in ConnectionLog.objects.all()}
    assert len(rows) == 3
    for entry in entries:
        row = rows[entry.pk]
        assert (row.user_id, row.ip, row.nickname) == (entry.user_id, entry.ip, entry.nickname)
        assert (row.device_uid, row.platform, row.country) == (
            entry.device_uid,
            entry.platform,
            entry.country,
        )
        assert row.created_at == entry.created_at
    assert rows[entries[1].pk].device_uid == "DEVBATCH01" and rows[entries[1].pk].ip is None


def test_purge_task_removes_old_rows_and_keeps_recent(settings):
    settings.VOICE_CONNECTION_LOG_RETENTION_DAYS = 90
    user = UserFactory()
    rows = [services.connection_log_write(user_id=user.pk, ip="10.0.0.1") for _ in range(5)]
    now = timezone.now()
    ages = [200, 91, 89, 1, 0]
    for row, days in zip(rows, ages, strict=True):
        ConnectionLog.objects.filter(pk=row.pk).update(created_at=now - dt.timedelta(days=days))
    assert connection_log_purge.delay().get() == 2  # eager in tests, as the beat would run it
    kept = sorted(ConnectionLog.objects.values_list("pk", flat=True))
    assert kept == sorted(r.pk for r in rows[2:])
    assert connection_log_purge() == 0  # idempotent


def test_purge_works_in_batches():
    user = UserFactory()
    old = timezone.now() - dt.timedelta(days=400)
    ConnectionLog.objects.bulk_create([ConnectionLog(user=user, nickname="n") for _ in range(25)])
    ConnectionLog.objects.update(created_at=old)
    assert services.connection_log_purge(older_than_days=90, batch_size=7) == 25
    assert not ConnectionLog.objects.exists()


def test_deleting_the_account_deletes_its_log_rows():
    user = UserFactory()
    services.connection_log_write(user_id=user.pk, ip="10.0.0.1")
    user.delete()
    assert not ConnectionLog.objects.exists()


def test_channel_admission_reads_sanctions_in_force_and_membership():
    from voice.models import ChannelSanction, SanctionKind
    from voice.selectors import channel_admission

    owner, user = UserFactory(), UserFactory()
    channel = services.channel_create(creator=owner, name="Admission")
    assert channel_admission(channel.pk, user.pk)[1:] == ({}, False)
    ChannelMembership.objects.create(channel=channel, user=user)
    until = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=5)
    ChannelSanction.objects.create(channel=channel, user=user, kind=SanctionKind.MUTE, until=until)
    ChannelSanction.objects.create(channel=channel, user=user, kind=SanctionKind.BAN, until=None)
    found, sanctions, member = channel_admission(channel.pk, user.pk)
    assert (found.pk, found.name, member) == (channel.pk, "Admission", True)
    assert sanctions == {"mute": int(until.timestamp() * 1000), "ban": None}
    channel.sanctions.update(until=timezone.now() - dt.timedelta(seconds=1))  # run out
    assert channel_admission(channel.pk, user.pk)[1] == {}
    with pytest.raises(ServiceError):
        channel_admission(channel.pk + 1000, user.pk)
