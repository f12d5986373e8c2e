"""What staff see of CallsApp: routing data and public keys, never content (there is none
readable: events are ciphertext). Read-only: every change goes through the services.
Communities are plain text and moderated: staff read them and may delete a community or a
post (a real delete, likes with it). Bots are listed for staff; a token's hash is never
shown, and a bot is deleted (with its chats) as moderation, never changed."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Block, Bot, Community, CommunityPost, DeviceKeys, MediaBlob, Room


class ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Room)
class RoomAdmin(ReadOnly):
    list_display = ("room_id", "name", "is_direct", "created_at")
    search_fields = ("room_id",)


@admin.register(DeviceKeys)
class DeviceKeysAdmin(ReadOnly):
    list_display = ("device", "user", "uploaded_at")
    exclude = ("keys",)


@admin.register(Block)
class BlockAdmin(ReadOnly):
    list_display = ("blocker", "blocked", "created_at")


@admin.register(MediaBlob)
class MediaBlobAdmin(ReadOnly):
    list_display = ("media_id", "uploader", "size", "created_at")
    exclude = ("file",)


@admin.register(Community)
class CommunityAdmin(ReadOnly):
    list_display = ("name", "kind", "access", "created_at")
    list_filter = ("kind", "access")
    search_fields = ("name",)


@admin.register(CommunityPost)
class CommunityPostAdmin(ReadOnly):
    list_display = ("community", "author", "text", "created_at")
    list_select_related = ("community", "author")
    search_fields = ("text", "community__name")


@admin.register(Bot)
class BotAdmin(ReadOnly):
    list_display = ("username", "name", "owner", "created_at")
    list_select_related = ("owner",)
    search_fields = ("username", "name")
    # The token's hash and the webhook's secret are credentials, not for anyone's eyes.
    exclude = ("token_hash", "webhook_secret")
