"""CBLINE's privacy step: what it deletes and exports of one user (accounts/privacy).

Live state (presence, location, audio) is in Redis with TTLs of seconds to minutes, and the
deletion request closes the user's sockets, so nothing of it outlives the grace period."""

from __future__ import annotations

from django.db.models import Q
from django.db.models.fields.files import FieldFile

from accounts.privacy import registry

from .models import Channel, ChannelMembership, ChannelSanction, ConnectionLog


def user_data_delete(*, user_id: int) -> list[FieldFile]:
    ConnectionLog.objects.filter(user_id=user_id).delete()
    ChannelMembership.objects.filter(user_id=user_id).delete()
    # Sanctions they received and sanctions they gave (the signal bumps each target's cache).
    ChannelSanction.objects.filter(Q(user_id=user_id) | Q(created_by_id=user_id)).delete()
    Channel.moderators.through.objects.filter(user_id=user_id).delete()
    # Channels they created stay for their members, with no creator.
    Channel.objects.filter(creator_id=user_id).update(creator=None)
    return []


def user_data_export(*, user_id: int) -> registry.ExportPart:
    part = registry.ExportPart()
    part.collections["channels_created"] = [
        {"name": c.name, "description": c.description, "created_at": c.created_at}
        for c in Channel.objects.filter(creator_id=user_id).order_by("pk")
    ]
    part.collections["channels_moderated"] = [
        {"name": name}
        for name in Channel.objects.filter(moderators__id=user_id)
        .order_by("pk")
        .values_list("name", flat=True)
    ]
    part.collections["memberships"] = [
        {"channel": m.channel.name, "joined_at": m.joined_at}
        for m in ChannelMembership.objects.filter(user_id=user_id)
        .select_related("channel")
        .order_by("pk")
    ]
    part.collections["sanctions_received"] = [
        {"channel": s.channel.name, "kind": s.kind, "until": s.until, "created_at": s.created_at}
        for s in ChannelSanction.objects.filter(user_id=user_id)
        .select_related("channel")
        .order_by("pk")
    ]
    # Whom they sanctioned is somebody else's data: the channel, kind and dates only.
    part.collections["sanctions_given"] = [
        {"channel": s.channel.name, "kind": s.kind, "until": s.until, "created_at": s.created_at}
        for s in ChannelSanction.objects.filter(created_by_id=user_id)
        .select_related("channel")
        .order_by("pk")
    ]
    part.collections["connection_log"] = [
        {
            "at": row.created_at,
            "ip": row.ip,
            "nickname": row.nickname,
            "device_uid": row.device_uid,
            "device_make": row.device_make,
            "device_model": row.device_model,
            "platform": row.platform,
            "client_version": row.client_version,
            "country": row.country,
        }
        for row in ConnectionLog.objects.filter(user_id=user_id).order_by("created_at", "pk")
    ]
    return part


def register() -> None:
    labels = (
        "voice.ConnectionLog.user",
        "voice.ChannelMembership.user",
        "voice.ChannelSanction.user",
        "voice.ChannelSanction.created_by",
        "voice.Channel.moderators",
        "voice.Channel.creator",
    )
    registry.register(
        app="voice",
        title="CBLINE",
        delete=user_data_delete,
        export=user_data_export,
        deletes=labels,
        exports=labels,
    )
