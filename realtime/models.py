"""The durable per-device stream (docs/protocols/stream.md). Devices and users are plain
integers here: realtime imports no product and not accounts, whose rows own these."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class StreamHead(models.Model):
    """Highest seq handed out to one device. Writers bump it in their transaction, which
    serialises them per device: items become visible in seq order, never with a gap behind."""

    device_pk = models.BigIntegerField(primary_key=True)
    user_id = models.BigIntegerField(db_index=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"device {self.device_pk} @ {self.last_seq}"


class StreamItem(models.Model):
    """One item of one device's stream, kept until that device acks it."""

    device_pk = models.BigIntegerField()
    user_id = models.BigIntegerField(db_index=True)
    seq = models.BigIntegerField()
    # Which product renders it ("messaging.sync", ...), and an id of that product's own row
    # (a room event stored once for many devices), if any.
    kind = models.CharField(max_length=64)
    ref = models.BigIntegerField(null=True, blank=True)
    body = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device_pk", "seq"], name="stream_item_seq_unique"),
        ]
        indexes = [models.Index(fields=["kind", "ref"], name="stream_item_kind_ref")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.seq} for device {self.device_pk}"


class IdempotencyKey(models.Model):
    """A client operation already applied, and its answer: a resend gets the answer again."""

    device_pk = models.BigIntegerField()
    key = models.CharField(max_length=255)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device_pk", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.key} (device {self.device_pk})"
