"""Celery tasks of accounts/: thin, idempotent, calling services (imported inside each task:
the services import this module to enqueue)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="accounts.tasks.deleted_accounts_purge")
def deleted_accounts_purge() -> int:
    """Beat, daily: erase, in every app, accounts whose deletion is past the grace period."""
    from .privacy.services import deleted_accounts_purge as purge

    return purge()


@shared_task(name="accounts.tasks.data_export_build")
def data_export_build(export_id: int) -> str:
    from .privacy.services import data_export_build as build

    export = build(export_id=export_id)
    return export.status if export is not None else "gone"


@shared_task(name="accounts.tasks.data_exports_expire")
def data_exports_expire() -> int:
    """Beat, hourly: archives whose download link has expired are deleted."""
    from .privacy.services import data_exports_expire as expire

    return expire()


@shared_task(name="accounts.tasks.deletion_requests_purge")
def deletion_requests_purge() -> int:
    """Beat, daily: unconfirmed deletion requests are forgotten once their link expires."""
    from .privacy.services import deletion_requests_purge as purge

    return purge()


@shared_task(name="accounts.tasks.contact_messages_purge")
def contact_messages_purge() -> int:
    """Beat, daily: contact messages older than CONTACT_RETENTION_DAYS go, with their files."""
    from .contact.services import contact_messages_purge as purge

    return purge()


@shared_task(name="accounts.tasks.sessions_expired_purge")
def sessions_expired_purge(now: Any = None) -> int:
    """Beat, hourly: devices of sessions that ran out end (sockets closed, keys gone)."""
    from .services import sessions_expired_purge as purge

    return purge(now=now)
