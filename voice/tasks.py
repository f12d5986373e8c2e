"""Celery tasks of CBLINE: interfaces that call services, idempotent."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(name="voice.tasks.connection_log_purge")
def connection_log_purge() -> int:
    """Keep the connection-log promise: rows older than the retention period go (in batches).
    Running it twice deletes nothing the second time."""
    return services.connection_log_purge(
        older_than_days=settings.VOICE_CONNECTION_LOG_RETENTION_DAYS
    )


@shared_task(name="voice.tasks.location_expire")
def location_expire() -> int:
    """Keep the location promise when nobody moves: coordinates not refreshed within
    VOICE_LOCATION_TTL_SECONDS go from the shared GEO set. Idempotent."""
    return services.locations_expire()
