"""Celery tasks of accounts/: thin, idempotent, calling services (which start them by name,
see realtime.jobs)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services
from .contact import services as contact_services
from .privacy import services as privacy_services


@shared_task(name="accounts.tasks.deleted_accounts_purge")
def deleted_accounts_purge() -> int:
    """Beat, daily: erase, in every app, accounts whose deletion is past the grace period."""
    return privacy_services.deleted_accounts_purge()


@shared_task(name="accounts.tasks.data_export_build")
def data_export_build(export_id: int) -> str:
    export = privacy_services.data_export_build(export_id=export_id)
    return export.status if export is not None else "gone"


@shared_task(name="accounts.tasks.data_exports_expire")
def data_exports_expire() -> int:
    """Beat, hourly: archives whose download link has expired are deleted."""
    return privacy_services.data_exports_expire()


@shared_task(name="accounts.tasks.deletion_requests_purge")
def deletion_requests_purge() -> int:
    """Beat, daily: unconfirmed deletion requests are forgotten once their link expires."""
    return privacy_services.deletion_requests_purge()


@shared_task(name="accounts.tasks.contact_messages_purge")
def contact_messages_purge() -> int:
    """Beat, daily: contact messages older than CONTACT_RETENTION_DAYS go, with their files."""
    return contact_services.contact_messages_purge()


@shared_task(name="accounts.tasks.sessions_expired_purge")
def sessions_expired_purge(now: Any = None) -> int:
    """Beat, hourly: devices of sessions that ran out end (sockets closed, keys gone)."""
    return services.sessions_expired_purge(now=now)
