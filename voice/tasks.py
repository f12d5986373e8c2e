"""Celery tasks of CBLINE: interfaces that call services, idempotent."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(name="voice.tasks.connection_log_purge")
def connection_log_purge() -> int:
    """Keep the connection-log promise: rows older than the retention period go (in batches).
    Running it twice deletes nothing the second time."""
    from .services import connection_log_purge as purge

    return purge(older_than_days=settings.VOICE_CONNECTION_LOG_RETENTION_DAYS)
