"""Celery tasks of messaging/: thin, idempotent, calling services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="messaging.tasks.undelivered_purge")
def undelivered_purge() -> dict[str, int]:
    """Beat, hourly: what waited longer than MESSAGING_RETENTION_DAYS is deleted."""
    from .services import undelivered_purge as purge

    return purge()
