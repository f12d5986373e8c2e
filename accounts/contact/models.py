"""Contact form messages (imported by accounts/models.py, so they belong to accounts)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ContactTopic(models.TextChoices):
    GENERAL = "general", "A question or a problem"
    PRIVACY = "privacy", "My data and privacy"
    SECURITY = "security", "A security flaw"
    PAYMENTS = "payments", "A payment"
    ABUSE = "abuse", "Report abuse"


class ContactMessage(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        ANSWERED = "answered", "Answered"
        CLOSED = "closed", "Closed without answer"

    # The account that wrote, if signed in; a visitor's message has only name and email.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="contact_messages",
    )
    name = models.CharField(max_length=100)
    email = models.EmailField()
    topic = models.CharField(max_length=10, choices=ContactTopic.choices)
    message = models.TextField(max_length=5000)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.NEW, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    answer = models.TextField(blank=True, max_length=5000)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_topic_display()} from {self.email}"  # type: ignore[attr-defined]


class ContactAttachment(models.Model):
    message = models.ForeignKey(
        ContactMessage, on_delete=models.CASCADE, related_name="attachments"
    )
    # A random name under contact/: the media view serves it to staff only.
    file = models.FileField(upload_to="contact/%Y/%m/")
    original_name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100, help_text="judged from the content")
    size = models.PositiveIntegerField()

    def __str__(self) -> str:
        return self.original_name
