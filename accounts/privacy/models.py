"""Records of the privacy rights at work: data exports and deletion requests made by email.
(Imported by accounts/models.py, so they belong to the accounts app.)"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models


def export_storage() -> FileSystemStorage:
    """Archives live outside MEDIA_ROOT: only their owner's expiring link serves them."""
    return FileSystemStorage(location=settings.PRIVACY_EXPORT_ROOT)


class DataExport(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to start"
        RUNNING = "running", "Being built"
        READY = "ready", "Ready to download"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_exports"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    steps_done = models.PositiveSmallIntegerField(default=0)
    steps_total = models.PositiveSmallIntegerField(default=0)
    # The secret part of the download link; the link also needs the owner's login.
    token = models.CharField(max_length=64, unique=True)
    file = models.FileField(storage=export_storage, upload_to="exports/%Y/%m/", blank=True)
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export #{self.pk} of {self.user_id} ({self.status})"

    @property
    def percent(self) -> int:
        if self.status == self.Status.READY:
            return 100
        return int(100 * self.steps_done / self.steps_total) if self.steps_total else 0


class DeletionRequest(models.Model):
    """A request to delete an account, made by someone who cannot log in. Nothing happens
    until the link mailed to the account's address is followed and confirmed."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for email confirmation"
        CONFIRMED = "confirmed", "Confirmed: account deleted"
        EXPIRED = "expired", "Not confirmed in time"

    email = models.EmailField()
    message = models.TextField(blank=True, max_length=2000)
    # The account the address belonged to when the request was made (if any).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deletion_requests",
    )
    # SHA-256 of the token in the mailed link (the token itself is never stored).
    token_hash = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    mail_sent = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"deletion request #{self.pk} ({self.status})"
