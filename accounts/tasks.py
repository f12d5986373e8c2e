"""Celery tasks of accounts/: thin, idempotent, calling services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="accounts.tasks.deleted_accounts_purge")
def deleted_accounts_purge() -> int:
    """Beat, daily: erase accounts whose deletion request is past the grace period."""
    from .services import deleted_accounts_purge as purge

    return purge()
