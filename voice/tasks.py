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
