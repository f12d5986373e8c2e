"""CallsApp's server state: public keys, rooms, and ciphertext awaiting delivery. Never a
private key or a plaintext. A room event's ciphertext is stored once; each target device's
pending delivery is an item of that device's durable stream (realtime.StreamItem, kind
"messaging.event", ref = the event's pk), deleted on the device's ack."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Device


class DeviceKeys(models.Model):
    """A device's signed identity keys (the spec's `device_keys` object), as uploaded."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, related_name="e2e_keys")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="e2e_device_keys"
    )
    keys = models.JSONField()
    curve25519 = models.CharField(max_length=128)
    ed25519 = models.CharField(max_length=128)
    uploaded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"keys of {self.device}"


class OneTimeKey(models.Model):
    """Handed out exactly once (claimed and deleted in one transaction)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="one_time_keys")
    algorithm = models.CharField(max_length=64)
    key_id = models.CharField(max_length=128)
    key = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "algorithm", "key_id"], name="one_time_key_unique"
            ),
        ]
        indexes = [models.Index(fields=["device", "algorithm", "id"], name="otk_claim_order")]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.key_id}"


class FallbackKey(models.Model):
    """Given out when a device has no one-time key left; kept until replaced."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="fallback_keys")
    algorithm = models.CharField(max_length=64)
    key_id = models.CharField(max_length=128)
    key = models.JSONField()
    used = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "algorithm"], name="fallback_key_unique"),
        ]

    def __str__(self) -> str:
        return f"fallback {self.algorithm}:{self.key_id}"


class CrossSigningKey(models.Model):
    class Usage(models.TextChoices):
        MASTER = "master"
        SELF_SIGNING = "self_signing"
        USER_SIGNING = "user_signing"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cross_signing_keys"
    )
    usage = models.CharField(max_length=16, choices=Usage.choices)
    key = models.JSONField()
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "usage"], name="cross_signing_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.usage} key of user {self.user_id}"


class Room(models.Model):
    room_id = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=100, blank=True)
    is_direct = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name or self.room_id


class Membership(models.Model):
    """A joined member. Leaving deletes the row (the leave event says so to the others)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships"
    )
    is_admin = models.BooleanField(default=False)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} in {self.room_id}"


class RoomEvent(models.Model):
    """One event's content, stored once until every target device acked it (or 14 days)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=64, unique=True)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_events"
    )
    sender_device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    type = models.CharField(max_length=128)
    state_key = models.CharField(max_length=255, null=True, blank=True)
    content = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Set when the last target device acked: the content is emptied then ("stored only until
    # delivered"); the row stays, content-free, so the sender can still delete it for
    # everyone, until the retention purge.
    delivered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class Block(models.Model):
    """`blocker` refuses everything from `blocked` (the spec's ignored users)."""

    blocker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_made"
    )
    blocked = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_received"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


def media_path(instance: MediaBlob, filename: str) -> str:
    return f"messaging/media/{instance.media_id}"


class MediaBlob(models.Model):
    """An encrypted attachment (ciphertext only). Deleted once every target device fetched
    it, or after 14 days."""

    media_id = models.CharField(max_length=64, unique=True)
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="media_blobs"
    )
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="media")
    file = models.FileField(upload_to=media_path)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.media_id


class MediaFetch(models.Model):
    """A device that may still fetch a blob; deleted when it does."""

    blob = models.ForeignKey(MediaBlob, on_delete=models.CASCADE, related_name="pending")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blob", "device"], name="media_fetch_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.blob_id} for device {self.device_id}"


# --- Communities and public accounts: plain text, NOT end-to-end encrypted (the policy's
# "Bots, public accounts and communities"); a post stays until its author or an admin
# deletes it.
class Community(models.Model):
    class Kind(models.TextChoices):
        COMMUNITY = "community"  # members post
        PUBLIC = "public"  # a public account: only admins post, the others read

    class Access(models.TextChoices):
        OPEN = "open"  # listed; anyone signed in joins at once
        APPROVAL = "approval"  # unlisted; found by exact name or link, an admin approves

    community_id = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.COMMUNITY)
    access = models.CharField(max_length=16, choices=Access.choices, default=Access.OPEN)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "communities"
        constraints = [
            # Joined by its exact name, any case: a name names one community.
            models.UniqueConstraint(Lower("name"), name="community_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class CommunityMember(models.Model):
    """A member (or subscriber, of a public account), or a join request while `pending`."""

    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="community_memberships"
    )
    is_admin = models.BooleanField(default=False)
    pending = models.BooleanField(default=False)
    muted = models.BooleanField(default=False)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["community", "user"], name="community_member_unique"),
        ]
        indexes = [models.Index(fields=["community", "joined_at"], name="community_seniority")]

    def __str__(self) -> str:
        return f"user {self.user_id} in {self.community_id}"


class CommunityPost(models.Model):
    community = models.ForeignKey(Community, on_delete=models.CASCADE, related_name="posts")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="community_posts"
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["community", "created_at"], name="community_timeline")]

    def __str__(self) -> str:
        return f"post {self.pk} in {self.community_id}"


class PostLike(models.Model):
    post = models.ForeignKey(CommunityPost, on_delete=models.CASCADE, related_name="likes")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="post_likes"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["post", "user"], name="post_like_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} likes {self.post_id}"


# --- Bots: plain text, NOT end-to-end encrypted (the policy's "Bots, public accounts and
# communities"). The bot and its owner read what users write to it; a chat stays until the
# user deletes it, or the user or the bot is deleted. Updates the bot has not fetched go
# after MESSAGING_RETENTION_DAYS.
class Bot(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bots"
    )
    username = models.CharField(max_length=32)
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=512, blank=True)
    # SHA-256 of the token's secret part (high-entropy, so a fast hash is enough): the
    # token itself is shown once and never stored.
    token_hash = models.CharField(max_length=64)
    # The last update_id given out. Taken under the row's lock, so one bot's updates commit
    # in update_id order and an offset never confirms one that was not yet visible.
    last_update_id = models.BigIntegerField(default=0)
    webhook_url = models.CharField(max_length=2048, blank=True)
    webhook_secret = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Found by its exact username, any case: a username names one bot.
            models.UniqueConstraint(Lower("username"), name="bot_username_unique"),
        ]

    def __str__(self) -> str:
        return self.username


class BotChat(models.Model):
    """A user's chat with a bot: made by the user's first message (a bot never writes
    first). Its pk is the `chat_id` the bot sees."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="chats")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bot_chats"
    )
    blocked = models.BooleanField(default=False)  # the user stopped the bot
    created_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "user"], name="bot_chat_unique")]
        indexes = [models.Index(fields=["user", "-last_at"], name="bot_chats_recent")]

    def __str__(self) -> str:
        return f"user {self.user_id} with bot {self.bot_id}"


class BotMessage(models.Model):
    chat = models.ForeignKey(BotChat, on_delete=models.CASCADE, related_name="messages")
    from_bot = models.BooleanField()
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["chat", "created_at"], name="bot_chat_timeline")]

    def __str__(self) -> str:
        return f"message {self.pk} in bot chat {self.chat_id}"


class BotUpdate(models.Model):
    """A user's message waiting for the bot (getUpdates or its webhook); deleted once
    confirmed or delivered, or after MESSAGING_RETENTION_DAYS."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="updates")
    update_id = models.BigIntegerField()
    message = models.ForeignKey(BotMessage, on_delete=models.CASCADE, related_name="updates")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bot", "update_id"], name="bot_update_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="bot_update_age")]

    def __str__(self) -> str:
        return f"update {self.update_id} of bot {self.bot_id}"
