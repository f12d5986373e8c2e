"""Celery tasks of messaging/: thin, idempotent, calling services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import bot_webhook, bots, services


@shared_task(name="messaging.tasks.undelivered_purge")
def undelivered_purge() -> dict[str, int]:
    """Beat, hourly: what waited longer than MESSAGING_RETENTION_DAYS is deleted."""
    return services.undelivered_purge()


@shared_task(name="messaging.tasks.bot_updates_purge")
def bot_updates_purge() -> dict[str, int]:
    """Beat, hourly: bot updates no bot fetched within MESSAGING_RETENTION_DAYS are deleted."""
    return bots.bot_updates_purge()


@shared_task(bind=True, name=bot_webhook.TASK, max_retries=bot_webhook.MAX_RETRIES)
def bot_webhook_deliver(self: Any, bot_id: int) -> dict[str, bool]:
    """A bot's pending updates to its webhook; a failure is retried with a doubling delay.
    After the last retry the updates wait (the next update tries again; the purge ends
    them)."""
    if bots.bot_webhook_deliver(bot_id=bot_id):
        return {"delivered": True}
    if self.request.retries >= bot_webhook.MAX_RETRIES:
        return {"delivered": False}
    raise self.retry(countdown=bot_webhook.backoff_seconds(self.request.retries))
