"""Celery tasks of payments/: ids in, the service does the work (idempotent)."""

from __future__ import annotations

from celery import shared_task

from .providers.state import ProviderError


@shared_task(
    autoretry_for=(ProviderError,), retry_backoff=True, retry_backoff_max=600, max_retries=12
)
def provider_event_process(event_pk: int) -> None:
    from .services import provider_event_process as process

    process(event_pk=event_pk)


@shared_task
def entitlements_expire() -> int:
    from .services import entitlements_expire as expire

    return expire()
