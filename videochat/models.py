"""Durable video chat records: reports, bans, appeals. Who chatted with whom is never here:
pairings live in Redis only (videochat.matchmaking). A report keeps the chat lines the
reporter chose to send, nothing else of the conversation."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ReportReason(models.TextChoices):
    NUDITY = "nudity", "Nudity or sexual content"
    HARASSMENT = "harassment", "Harassment or hate"
    MINOR = "minor", "Looks under age"
    VIOLENCE = "violence", "Violence or threats"
    SPAM = "spam", "Spam or advertising"
    OTHER = "other", "Other"


class ReportStatus(models.TextChoices):
    OPEN = "open", "Open"
    DISMISSED = "dismissed", "Dismissed"
    BANNED = "banned", "Led to a ban"


class Report(models.Model):
    # SET_NULL: a deleted account's reports stay for the record without pointing at it.
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    reported = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="videochat_reports_against",
    )
    reason = models.CharField(max_length=16, choices=ReportReason.choices)
    # The lines the reporter saw and sent with the report: [{"from": "me"|"partner", "text"}].
    chat_lines = models.JSONField(default=list, blank=True)
    frame = models.ImageField(upload_to="videochat/reports/%Y/%m/", blank=True)
    status = models.CharField(
        max_length=12, choices=ReportStatus.choices, default=ReportStatus.OPEN, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        who = self.reported or "a deleted account"
        return f"Report #{self.pk}: {who} reported for {self.get_reason_display().lower()}"


class Ban(models.Model):
    """A timed ban from video chat. The row is kept after expiry; the image is not."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="videochat_bans",
    )
    # The social ids the user had at ban time, so a fresh account behind the same Facebook
    # or VK profile is refused too.
    facebook_uid = models.CharField(max_length=191, blank=True, db_index=True)
    vk_uid = models.CharField(max_length=191, blank=True, db_index=True)
    reason = models.TextField()
    image = models.ImageField(upload_to="videochat/bans/%Y/%m/", blank=True)
    report = models.ForeignKey(
        Report, on_delete=models.SET_NULL, null=True, blank=True, related_name="bans"
    )
    starts_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("starts_at")), name="ban_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        who = self.user or "A deleted account"
        return f"{who} banned until {self.expires_at:%Y-%m-%d %H:%M} (ban #{self.pk})"

    @property
    def is_active(self) -> bool:
        return self.starts_at <= timezone.now() < self.expires_at


class AppealStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted (ban lifted)"
    REJECTED = "rejected", "Rejected"


class Appeal(models.Model):
    ban = models.ForeignKey(Ban, on_delete=models.CASCADE, related_name="appeals")
    text = models.TextField(max_length=2000)
    status = models.CharField(
        max_length=10, choices=AppealStatus.choices, default=AppealStatus.OPEN, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["ban"], condition=Q(status="open"), name="one_open_appeal_per_ban"
            ),
        ]

    def __str__(self) -> str:
        return f"appeal #{self.pk} on ban #{self.ban_id} ({self.status})"
