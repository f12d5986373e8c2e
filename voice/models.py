"""CBLINE durable state: channels, who belongs to them, moderation, and the connection log.

Live state (who is connected, the floor, locations, audio) is in Redis, never here: see
voice/live.py. No model has a field that could hold audio.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class Channel(models.Model):
    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    # A Django password hash (never the password); empty for a public channel.
    password_hash = models.CharField(max_length=128, blank=True)
    # 0 = the whole channel hears a talker; else only members within this many km.
    range_km = models.PositiveIntegerField(default=0)
    # Empty for a channel staff made in the admin.
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    moderators = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="moderated_voice_channels"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # "Chat" and "chat" would look like one channel in a list: keep names unique
            # regardless of case.
            models.UniqueConstraint(Lower("name"), name="voice_channel_name_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_protected(self) -> bool:
        return bool(self.password_hash)


class ChannelMembership(models.Model):
    """A user who has joined the channel (with its password if it has one). Lets them rejoin
    without the password and download a missed transmission; a kick or ban removes it."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="voice_memberships"
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "user"], name="voice_membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.channel}"


class SanctionKind(models.TextChoices):
    MUTE = "mute", "Muted"
    BAN = "ban", "Banned"


class ChannelSanction(models.Model):
    """A moderator's mute (may listen, may not talk) or ban (may not join)."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="sanctions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="voice_sanctions"
    )
    kind = models.CharField(max_length=8, choices=SanctionKind.choices)
    until = models.DateTimeField(null=True, blank=True, help_text="empty = forever")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "user", "kind"], name="voice_sanction_unique"
            ),
        ]

    def __str__(self) -> str:
        # A sentence for the admin: "bob@example.com muted in Night Owls until 2026-12-01 10:00".
        until = f"until {self.until:%Y-%m-%d %H:%M}" if self.until else "with no end"
        return f"{self.user} {self.get_kind_display().lower()} in {self.channel} {until}"


class ConnectionLog(models.Model):
    """One row per CBLINE socket connect, as the privacy policy lists; analysed only in
    aggregate (the admin shows no per-user trail) and purged after the retention period."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    nickname = models.CharField(max_length=32, blank=True)
    # Deleting an account deletes its log rows with it (the deletion promise).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # The policy's "unique user identifier generated from device identifiers": the id of the
    # Device the server issued at login (kept as text: the log outlives a signed-out device).
    device_uid = models.CharField(max_length=32, blank=True)
    device_make = models.CharField(max_length=64, blank=True)
    device_model = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=64, blank=True)
    client_version = models.CharField(max_length=64, blank=True)
    country = models.CharField(max_length=2, blank=True)

    class Meta:
        verbose_name = "connection log"
        verbose_name_plural = "connection log (aggregates)"

    def __str__(self) -> str:
        return f"connection {self.pk}"
