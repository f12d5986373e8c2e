"""The law keeps a sale's record for years after its account is erased; past that period
(PAYMENTS_RECORD_RETENTION_YEARS) nothing of it stays: a beat task, tested by moving time
forward. A sale whose account still exists is the account's own data and stays with it."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from config.celery_app import app
from payments import services
from payments.models import Order
from payments.tasks import records_purge
from tests.factories import PriceFactory, UserFactory


def sale(user, *, years_ago: float, ref: str) -> Order:  # type: ignore[no-untyped-def]
    return Order.objects.create(
        user=user,
        price=PriceFactory(),
        provider="stripe",
        status="paid",
        amount_minor=599,
        currency="EUR",
        transaction_id=ref,
        payer_email=f"{ref}@example.com",
        payer_name="A Payer",
        ordered_at=timezone.now() - dt.timedelta(days=365.25 * years_ago),
    )


def test_an_erased_accounts_sales_go_when_the_law_no_longer_keeps_them(db, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PAYMENTS_RECORD_RETENTION_YEARS = 10
    live = UserFactory()
    sale(None, years_ago=10.1, ref="old_unlinked")
    young_unlinked = sale(None, years_ago=9.9, ref="young_unlinked")
    old_linked = sale(live, years_ago=12, ref="old_linked")

    assert records_purge.delay().get() == 1  # the beat's task, today
    kept = set(Order.objects.values_list("transaction_id", flat=True))
    assert kept == {"young_unlinked", "old_linked"}

    # A year later the younger one has aged out too; the live account's sale stays.
    later = timezone.now() + dt.timedelta(days=365)
    assert services.records_purge(now=later) == 1
    assert list(Order.objects.values_list("pk", flat=True)) == [old_linked.pk]
    assert not Order.objects.filter(pk=young_unlinked.pk).exists()


def test_the_records_purge_is_on_the_beat() -> None:
    tasks_on_beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "payments.tasks.records_purge" in tasks_on_beat
