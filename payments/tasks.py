"""Celery tasks of payments/: ids in, the service does the work (idempotent)."""

from __future__ import annotations

from celery import shared_task

from . import services
from .providers.state import ProviderError


@shared_task(
    name="payments.tasks.provider_event_process",
    autoretry_for=(ProviderError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=12,
)
def provider_event_process(event_pk: int) -> None:
    services.provider_event_process(event_pk=event_pk)


@shared_task(name="payments.tasks.entitlements_expire")
def entitlements_expire() -> int:
    return services.entitlements_expire()


@shared_task(name="payments.tasks.records_purge")
def records_purge() -> int:
    return services.records_purge()
