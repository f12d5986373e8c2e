"""A user with data in every app, for the deletion and export tests."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialToken
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from accounts.models import BirthDateChange, ContactAttachment, ContactMessage, Profile, User
from messaging.models import (
    Block,
    Bot,
    BotChat,
    BotMessage,
    BotUpdate,
    Community,
    CommunityMember,
    CommunityPost,
    CrossSigningKey,
    DeviceKeys,
    MediaBlob,
    MediaFetch,
    Membership,
    OneTimeKey,
    PostLike,
    Room,
    RoomEvent,
)
from payments.models import Order
from realtime.models import StreamHead, StreamItem
from tests.factories import DeviceFactory, PriceFactory, UserFactory, grant_premium
from videochat.models import Appeal, Ban, Report, ReportStatus
from voice.models import Channel, ChannelMembership, ChannelSanction, ConnectionLog


def png(size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Holdings:
    user: User
    files: list[Path] = field(default_factory=list)  # stored files about the user


def user_with_data_everywhere(email: str, *, other: User) -> Holdings:
    """`email`'s account, with rows in accounts, allauth, CBLINE, video chat and payments,
    several of them shared with `other` (who must keep theirs)."""
    user = UserFactory(email=email)
    held = Holdings(user)
    profile = Profile.objects.get(user=user)
    profile.photo.save("me.png", ContentFile(png()), save=True)
    held.files.append(Path(profile.photo.path))
    device = DeviceFactory(user=user, make="Firefox 140")
    BirthDateChange.objects.create(
        user=user, current=profile.birth_date, requested=dt.date(1991, 1, 1), reason="typo"
    )
    EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
    account = SocialAccount.objects.create(
        user=user, provider="vk", uid=f"vk-{user.pk}", extra_data={"sex": 2, "city": "Kazan"}
    )
    SocialToken.objects.create(account=account, token="t", app=None)

    # CBLINE: a channel they made and moderate, one they joined, sanctions both ways, log.
    own = Channel.objects.create(name=f"own-{user.pk}", creator=user)
    own.moderators.add(user)
    theirs = Channel.objects.create(name=f"theirs-{user.pk}", creator=other)
    ChannelMembership.objects.create(channel=theirs, user=user)
    ChannelMembership.objects.create(channel=own, user=other)
    ChannelSanction.objects.create(channel=theirs, user=user, kind="mute", created_by=other)
    ChannelSanction.objects.create(channel=own, user=other, kind="ban", created_by=user)
    ConnectionLog.objects.create(
        user=user,
        ip="203.0.113.9",
        nickname="gone",
        device_uid="d3v1ce0f7he0wner",
        device_make="Firefox",
        platform="Linux",
    )
    ConnectionLog.objects.create(user=other, ip="198.51.100.1", nickname="stays")

    # Video chat: a report they filed and one against them (open), each with a frame; a
    # report against them that led to a ban, the ban's image and their appeal.
    filed = Report.objects.create(reporter=user, reported=other, reason="spam", chat_lines=[])
    filed.frame.save("f1.png", ContentFile(png()), save=True)
    against = Report.objects.create(
        reporter=other,
        reported=user,
        reason="harassment",
        chat_lines=[{"from": "partner", "text": "hey"}],
    )
    against.frame.save("f2.png", ContentFile(png()), save=True)
    banned = Report.objects.create(
        reporter=other, reported=user, reason="nudity", status=ReportStatus.BANNED
    )
    banned.frame.save("f3.png", ContentFile(png()), save=True)
    now = timezone.now()
    ban = Ban.objects.create(
        user=user, reason="nudity", report=banned, expires_at=now + dt.timedelta(days=400)
    )
    ban.image.save("b.png", ContentFile(png()), save=True)
    Appeal.objects.create(ban=ban, text="It was not me")
    held.files += [Path(r.frame.path) for r in (filed, against, banned)] + [Path(ban.image.path)]

    grant_premium(user, source="stripe")
    Order.objects.create(
        user=user,
        price=PriceFactory(),
        provider="stripe",
        status="paid",
        amount_minor=599,
        currency="EUR",
        transaction_id="pi_kept_for_accounting",
        payer_email=email,
    )

    # CallsApp: keys, a room with a message they sent, an encrypted attachment on disk, a
    # delivery waiting in their device's stream and one in the other user's, a block.
    other_device = DeviceFactory(user=other)
    DeviceKeys.objects.create(
        device=device, user=user, keys={}, curve25519=f"c{user.pk}", ed25519=f"e{user.pk}"
    )
    OneTimeKey.objects.create(device=device, algorithm="signed_curve25519", key_id="A", key={})
    CrossSigningKey.objects.create(user=user, usage="master", key={"k": 1})
    room = Room.objects.create(room_id=f"!r{user.pk}:test", name="pals")
    Membership.objects.create(room=room, user=user)
    Membership.objects.create(room=room, user=other)
    sent = RoomEvent.objects.create(
        room=room,
        event_id=f"$e{user.pk}",
        sender=user,
        sender_device=device,
        type="m.room.encrypted",
        content={"ciphertext": "AwgA"},
    )
    blob = MediaBlob(media_id=f"m{user.pk}", uploader=user, room=room, size=4)
    blob.file.save(blob.media_id, ContentFile(b"\x00enc"), save=True)
    MediaFetch.objects.create(blob=blob, device=other_device)
    held.files.append(Path(blob.file.path))
    StreamItem.objects.create(device_pk=device.pk, user_id=user.pk, seq=1, kind="messaging.sync")
    StreamHead.objects.create(device_pk=device.pk, user_id=user.pk, last_seq=1)
    StreamItem.objects.create(
        device_pk=other_device.pk, user_id=other.pk, seq=1, kind="messaging.event", ref=sent.pk
    )
    Block.objects.create(blocker=user, blocked=other)

    # CallsApp communities (plain, not E2E): one they alone administer, with the other as a
    # member (who takes over), a post each, likes both ways; a public account of the other's.
    club = Community.objects.create(community_id=f"club{user.pk}", name=f"Club {user.pk}")
    CommunityMember.objects.create(community=club, user=user, is_admin=True)
    CommunityMember.objects.create(community=club, user=other)
    mine = CommunityPost.objects.create(community=club, author=user, text="My post")
    theirs = CommunityPost.objects.create(community=club, author=other, text="Their post")
    PostLike.objects.create(post=theirs, user=user)
    PostLike.objects.create(post=mine, user=other)
    news = Community.objects.create(
        community_id=f"news{user.pk}", name=f"News {user.pk}", kind="public"
    )
    CommunityMember.objects.create(community=news, user=other, is_admin=True)
    CommunityMember.objects.create(community=news, user=user, muted=True)

    # CallsApp bots (plain, not E2E): a bot of theirs the other wrote to, and their chat
    # with the other's bot, an update of it waiting.
    mine_bot = Bot.objects.create(owner=user, username=f"mine{user.pk}_bot", name="Mine")
    to_mine = BotChat.objects.create(bot=mine_bot, user=other)
    BotMessage.objects.create(chat=to_mine, from_bot=False, text="Hello your bot")
    theirs_bot = Bot.objects.create(owner=other, username=f"theirs{user.pk}_bot", name="Theirs")
    with_theirs = BotChat.objects.create(bot=theirs_bot, user=user)
    said = BotMessage.objects.create(chat=with_theirs, from_bot=False, text="Hello their bot")
    BotUpdate.objects.create(bot=theirs_bot, update_id=1, message=said)

    # Correspondence: a message sent signed in, with a screenshot.
    letter = ContactMessage.objects.create(
        user=user, name="Me", email=email, topic="privacy", message="What do you keep?"
    )
    shot = ContactAttachment(
        message=letter, original_name="s.png", content_type="image/png", size=1
    )
    shot.file.save("s.png", ContentFile(png()), save=True)
    held.files.append(Path(shot.file.path))
    return held
