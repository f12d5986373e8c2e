"""Celery tasks of messaging/: thin, idempotent, calling services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="messaging.tasks.undelivered_purge")
def undelivered_purge() -> dict[str, int]:
    """Beat, hourly: what waited longer than MESSAGING_RETENTION_DAYS is deleted."""
    return services.undelivered_purge()
