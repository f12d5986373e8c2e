"""CallsApp's privacy step (accounts/privacy): what it deletes and exports of one user.

Messages are end-to-end encrypted: the server holds ciphertext until delivery, which is no
one's readable data and is not exported; the export lists what the server can read
(rooms, memberships, blocks, public keys, counts of what waits). Communities are plain
text: their memberships, posts and likes are exported in full. So are bot chats (every
message, theirs and the bot's) and the bots they own (never a token or its hash)."""

from __future__ import annotations

from django.db.models import Q
from django.db.models.fields.files import FieldFile

from accounts.models import Device
from accounts.privacy import registry
from realtime.models import StreamItem
from realtime.stream import stream_drop_devices

from .bots import user_bots_delete
from .communities import user_communities_delete
from .ids import mxid
from .models import (
    Block,
    Bot,
    BotChat,
    CommunityMember,
    CommunityPost,
    CrossSigningKey,
    DeviceKeys,
    FallbackKey,
    MediaBlob,
    MediaFetch,
    Membership,
    OneTimeKey,
    PostLike,
    RoomEvent,
)
from .selectors import expiry_of


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    device_pks = list(Device.objects.filter(user_id=user_id).values_list("pk", flat=True))
    stream_drop_devices(device_pks=device_pks)
    StreamItem.objects.filter(user_id=user_id).delete()
    # Their posts (with others' likes on them), likes and memberships; a community they were
    # the last admin of passes to its longest-standing member, or goes if nobody is left.
    user_communities_delete(user_id=user_id)
    # The bots they own (with every chat of them) and their chats with others' bots.
    user_bots_delete(user_id=user_id)
    RoomEvent.objects.filter(sender_id=user_id).delete()
    RoomEvent.objects.filter(sender_device_id__in=device_pks).update(sender_device=None)
    files = [b.file for b in MediaBlob.objects.filter(uploader_id=user_id) if b.file]
    MediaBlob.objects.filter(uploader_id=user_id).delete()
    Membership.objects.filter(user_id=user_id).delete()
    Block.objects.filter(Q(blocker_id=user_id) | Q(blocked_id=user_id)).delete()
    CrossSigningKey.objects.filter(user_id=user_id).delete()
    # Keys, one-time keys, fallback keys and pending media fetches go with the devices (the
    # accounts step deletes them, last); done here too so this step stands alone.
    DeviceKeys.objects.filter(user_id=user_id).delete()
    OneTimeKey.objects.filter(device_id__in=device_pks).delete()
    FallbackKey.objects.filter(device_id__in=device_pks).delete()
    MediaFetch.objects.filter(device_id__in=device_pks).delete()
    return files


def user_data_export(*, user_id: int) -> registry.ExportPart:
    part = registry.ExportPart()
    part.collections["callsapp_rooms"] = [
        {
            "room_id": m.room.room_id,
            "name": m.room.name,
            "direct": m.room.is_direct,
            "admin": m.is_admin,
            "joined_at": m.joined_at,
        }
        for m in Membership.objects.filter(user_id=user_id).select_related("room").order_by("pk")
    ]
    part.collections["callsapp_blocked_users"] = [
        {"user_id": mxid(b.blocked_id), "since": b.created_at}
        for b in Block.objects.filter(blocker_id=user_id).order_by("pk")
    ]
    part.collections["callsapp_device_keys"] = [
        {
            "device_id": k.device.device_id,
            "curve25519": k.curve25519,
            "ed25519": k.ed25519,
            "uploaded_at": k.uploaded_at,
            "one_time_keys_left": k.device.one_time_keys.count(),
        }
        for k in DeviceKeys.objects.filter(user_id=user_id).select_related("device")
    ]
    part.collections["callsapp_cross_signing_keys"] = [
        {"usage": k.usage, "key": k.key, "uploaded_at": k.uploaded_at}
        for k in CrossSigningKey.objects.filter(user_id=user_id).order_by("usage")
    ]
    part.collections["callsapp_messages_awaiting_delivery"] = [
        {
            "event_id": e.event_id,
            "room_id": e.room.room_id,
            "sent_at": e.created_at,
            "expires_at": expiry_of(e.created_at),
        }
        for e in RoomEvent.objects.filter(sender_id=user_id, delivered_at=None)
        .select_related("room")
        .order_by("pk")
    ]
    part.collections["callsapp_attachments_awaiting_fetch"] = [
        {
            "media_id": b.media_id,
            "size": b.size,
            "uploaded_at": b.created_at,
            "expires_at": expiry_of(b.created_at),
        }
        for b in MediaBlob.objects.filter(uploader_id=user_id).order_by("pk")
    ]
    # Encrypted items waiting for one of the user's devices to fetch them (not readable).
    devices = dict(Device.objects.filter(user_id=user_id).values_list("pk", "device_id"))
    part.collections["callsapp_waiting_for_your_devices"] = [
        {
            "device_id": devices.get(item.device_pk, ""),
            "kind": item.kind,
            "waiting_since": item.created_at,
            "expires_at": expiry_of(item.created_at),
        }
        for item in StreamItem.objects.filter(
            user_id=user_id, kind__startswith="messaging."
        ).order_by("device_pk", "seq")
    ]
    _export_communities(part, user_id)
    _export_bots(part, user_id)
    return part


def _export_bots(part: registry.ExportPart, user_id: int) -> None:
    part.collections["callsapp_bot_chats"] = [
        {
            "bot": c.bot.username,
            "bot_name": c.bot.name,
            "blocked": c.blocked,
            "started_at": c.created_at,
            "messages": [
                {"from": "bot" if m.from_bot else "you", "text": m.text, "at": m.created_at}
                for m in c.messages.order_by("created_at", "pk")
            ],
        }
        for c in BotChat.objects.filter(user_id=user_id).select_related("bot").order_by("pk")
    ]
    part.collections["callsapp_bots"] = [
        {
            "username": b.username,
            "name": b.name,
            "description": b.description,
            "webhook_url": b.webhook_url,
            "created_at": b.created_at,
            "chats": b.chats.count(),
            "updates_waiting": b.updates.count(),
        }
        for b in Bot.objects.filter(owner_id=user_id).order_by("pk")
    ]


def _export_communities(part: registry.ExportPart, user_id: int) -> None:
    part.collections["callsapp_community_memberships"] = [
        {
            "community": m.community.name,
            "community_id": m.community.community_id,
            "kind": m.community.kind,
            "role": "pending" if m.pending else "admin" if m.is_admin else "member",
            "muted": m.muted,
            "since": m.joined_at,
        }
        for m in CommunityMember.objects.filter(user_id=user_id)
        .select_related("community")
        .order_by("pk")
    ]
    part.collections["callsapp_community_posts"] = [
        {
            "community": p.community.name,
            "text": p.text,
            "posted_at": p.created_at,
            "likes": p.likes.count(),
        }
        for p in CommunityPost.objects.filter(author_id=user_id)
        .select_related("community")
        .order_by("pk")
    ]
    part.collections["callsapp_community_likes"] = [
        {"community": x.post.community.name, "post_text": x.post.text, "liked_at": x.created_at}
        for x in PostLike.objects.filter(user_id=user_id)
        .select_related("post__community")
        .order_by("pk")
    ]


def register() -> None:
    labels = (
        "messaging.DeviceKeys.user",
        "messaging.DeviceKeys.device",
        "messaging.OneTimeKey.device",
        "messaging.FallbackKey.device",
        "messaging.CrossSigningKey.user",
        "messaging.Membership.user",
        "messaging.RoomEvent.sender",
        "messaging.Block.blocker",
        "messaging.MediaBlob.uploader",
        "messaging.MediaFetch.device",
        "messaging.CommunityMember.user",
        "messaging.CommunityPost.author",
        "messaging.PostLike.user",
        "messaging.Bot.owner",
        "messaging.BotChat.user",
        "messaging.BotMessage.chat",
    )
    registry.register(
        app="messaging",
        title="CallsApp",
        delete=user_data_delete,
        export=user_data_export,
        deletes=(
            *labels,
            "messaging.RoomEvent.sender_device",
            "messaging.Block.blocked",
            "messaging.MediaFetch.blob",
            "messaging.PostLike.post",
            "messaging.BotChat.bot",
            "messaging.BotUpdate.bot",
            "messaging.BotUpdate.message",
        ),
        exports=labels,
        reasons={
            "messaging.Block.blocked": "who blocked them is the blocker's data, not theirs",
            "messaging.RoomEvent.sender_device": "exported as their events awaiting delivery",
            "messaging.OneTimeKey.device": "counted per device in callsapp_device_keys",
            "messaging.FallbackKey.device": "a public key the device replaces itself",
            "messaging.MediaFetch.device": "routing rows of attachments sent to them",
            "messaging.MediaFetch.blob": "exported as their attachments awaiting fetch",
            "messaging.PostLike.post": "others' likes on their posts: counted per post",
            "messaging.BotChat.bot": "others' chats with their bot are those users' data: "
            "counted per bot in callsapp_bots",
            "messaging.BotUpdate.bot": "queue entries of messages exported in their chats; "
            "counted per bot in callsapp_bots",
            "messaging.BotUpdate.message": "queue entries of messages exported in "
            "callsapp_bot_chats",
        },
    )
