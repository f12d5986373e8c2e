from __future__ import annotations

from django.conf import settings
from django.db import models


class Feature(models.TextChoices):
    VIDEOCHAT_FILTERS = "videochat.filters", "Video chat: gender and country filters"


class Entitlement(models.Model):
    """A paid feature a user holds until `valid_until` (None: no end). Granted by the
    providers' webhooks (Payments phase) or by staff."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entitlements"
    )
    feature = models.CharField(max_length=64, choices=Feature.choices)
    valid_until = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=32, default="staff")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "feature"])]

    def __str__(self) -> str:
        return f"{self.user} {self.feature}"
