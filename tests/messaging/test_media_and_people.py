"""Encrypted attachments (stored once, fetched once per device, purged), starting a chat by
exact nickname or email, blocks, devices that go away."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from messaging import selectors
from messaging.models import MediaBlob
from messaging.services import (
    ignored_users_set,
    media_fetch,
    media_upload,
    room_create,
    undelivered_purge,
)
from realtime.errors import ServiceError
from realtime.models import StreamItem
from tests.factories import UserFactory
from tests.messaging.conftest import member

pytestmark = pytest.mark.django_db(transaction=True)


def stored(blob: MediaBlob) -> Path:
    return Path(settings.MEDIA_ROOT) / blob.file.name


def media_id(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def test_an_attachment_is_fetched_once_per_device_then_deleted():
    alice, bob = member(), member()
    bob2 = member(bob.user)
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    ciphertext = b"\x8f" * 5000  # what the SDK's attachment encryption gives
    uri = media_upload(device=alice.device, room_id=room.room_id, data=ciphertext)
    assert uri.startswith(f"mxc://{settings.MESSAGING_SERVER_NAME}/")
    blob = MediaBlob.objects.get(media_id=media_id(uri))
    path = stored(blob)
    assert path.read_bytes() == ciphertext
    server = settings.MESSAGING_SERVER_NAME

    assert media_fetch(device=bob.device, server_name=server, media_id=blob.media_id) == ciphertext
    with pytest.raises(ServiceError):  # once per device
        media_fetch(device=bob.device, server_name=server, media_id=blob.media_id)
    assert path.exists()
    assert media_fetch(device=bob2.device, server_name=server, media_id=blob.media_id) == ciphertext
    assert not MediaBlob.objects.exists()
    assert not path.exists()


def test_an_outsider_cannot_fetch_or_upload():
    alice, bob, eve = member(), member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    uri = media_upload(device=alice.device, room_id=room.room_id, data=b"x" * 10)
    with pytest.raises(ServiceError) as exc:
        media_fetch(
            device=eve.device, server_name=settings.MESSAGING_SERVER_NAME, media_id=media_id(uri)
        )
    assert exc.value.status == 404
    with pytest.raises(ServiceError):
        media_upload(device=eve.device, room_id=room.room_id, data=b"y")


@override_settings(MESSAGING_MEDIA_MAX_BYTES=1000, MESSAGING_MEDIA_QUOTA_BYTES=1500)
def test_oversize_uploads_and_a_full_quota_are_refused_and_keep_nothing():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    folder = Path(settings.MEDIA_ROOT) / "messaging" / "media"
    before = set(folder.iterdir()) if folder.exists() else set()
    with pytest.raises(ServiceError) as exc:
        media_upload(device=alice.device, room_id=room.room_id, data=b"z" * 1001)
    assert exc.value.code == "M_TOO_LARGE"
    media_upload(device=alice.device, room_id=room.room_id, data=b"z" * 1000)
    with pytest.raises(ServiceError) as exc:
        media_upload(device=alice.device, room_id=room.room_id, data=b"z" * 600)
    assert exc.value.code == "M_RESOURCE_LIMIT_EXCEEDED"
    assert MediaBlob.objects.count() == 1
    assert set(folder.iterdir()) - before == {stored(MediaBlob.objects.get())}
    # Bob's quota is his own.
    media_upload(device=bob.device, room_id=room.room_id, data=b"b" * 600)


def test_the_14_day_purge_deletes_unfetched_attachments():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    uri = media_upload(device=alice.device, room_id=room.room_id, data=b"never fetched")
    blob = MediaBlob.objects.get(media_id=media_id(uri))
    path = stored(blob)
    undelivered_purge(now=timezone.now() + dt.timedelta(days=13))
    assert path.exists()
    counts = undelivered_purge(now=timezone.now() + dt.timedelta(days=14, seconds=1))
    assert counts["media"] == 1
    assert not MediaBlob.objects.exists()
    assert not path.exists()


def test_a_chat_starts_by_exact_nickname_or_email_only():
    alice = member()
    bob_user = UserFactory(email="bob.real@example.com", profile__nickname="BobTheBuilder")
    UserFactory(profile__nickname="BobTheBuilder2")
    found = [
        {
            "user_id": f"@{bob_user.pk}:{settings.MESSAGING_SERVER_NAME}",
            "display_name": "BobTheBuilder",
        }
    ]
    assert selectors.directory_search(user=alice.user, term="bobthebuilder") == found
    assert selectors.directory_search(user=alice.user, term="BOB.REAL@example.com") == found
    for partial in ("Bob", "BobThe", "bob.real", "example.com", "%", "*"):
        assert selectors.directory_search(user=alice.user, term=partial) == []
    # Someone who blocked you cannot be found by you.
    ignored_users_set(user=bob_user, ignored=[alice.mxid])
    assert selectors.directory_search(user=alice.user, term="BobTheBuilder") == []


def test_a_removed_device_is_announced_and_its_stream_dropped():
    alice, bob = member(), member()
    bob2 = member(bob.user)
    room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    assert StreamItem.objects.filter(device_pk=bob2.device.pk).exists()
    before = StreamItem.objects.filter(device_pk=alice.device.pk).order_by("-seq")[0].seq
    gone_pk = bob2.device.pk
    bob2.device.delete()  # what ending the session does
    assert not StreamItem.objects.filter(device_pk=gone_pk).exists()
    changed = [
        it.body["device_lists"]["changed"]
        for it in StreamItem.objects.filter(device_pk=alice.device.pk, seq__gt=before)
    ]
    assert changed == [[bob.mxid]]
    assert set(
        selectors.keys_query(user=alice.user, wanted={bob.mxid: []})["device_keys"][bob.mxid]
    ) == {bob.device.device_id}
