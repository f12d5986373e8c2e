"""What a provider says about one purchase when we ask it (never what an event claimed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


class ProviderError(Exception):
    """The provider could not be reached or refused the call; the caller retries later."""


class WebhookRefused(Exception):
    """A webhook delivery that is not verifiably the provider's, or too old/new."""


@dataclass(frozen=True)
class PurchaseState:
    # One of payments.models.OrderStatus.
    status: str
    paid_until: dt.datetime | None = None  # a subscription's current period end
    renews: bool = False
    checkout_id: str = ""
    subscription_id: str = ""
    transaction_id: str = ""
    purchase_token: str = ""
    provider_order_id: str = ""
    product_id: str = ""
    amount_minor: int | None = None
    currency: str = ""
    ordered_at: dt.datetime | None = None
    payer_id: str = ""
    payer_email: str = ""
    payer_name: str = ""
    payer_country: str = ""


@dataclass(frozen=True)
class VerifiedEvent:
    """A webhook delivery whose origin was proven: what to record and what to refetch."""

    event_id: str
    kind: str
    occurred_at: dt.datetime
    object_ref: dict[str, str]
