"""Reads of payments/: the one place every product asks whether a user may use a paid
feature now, and what the plans and purchases pages show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import Entitlement, Order, OrderStatus, Price, Product


def _in_force() -> Q:
    now = timezone.now()
    return Q(revoked_at__isnull=True) & (Q(valid_until__isnull=True) | Q(valid_until__gt=now))


def has_entitlement(*, user_id: int, feature: str) -> bool:
    """May this user use `feature` now? True while an entitlement to a product that grants
    it is in force (not revoked, not past its end)."""
    products = (
        Entitlement.objects.filter(_in_force(), user_id=user_id)
        .values_list("product__features", flat=True)
        .distinct()
    )
    return any(feature in (features or []) for features in products)


def entitlement_until(*, user_id: int, feature: str) -> tuple[bool, dt.datetime | None]:
    """Whether the user holds `feature` now and, if so, until when: the latest end among
    the entitlements in force that grant it (None: no end)."""
    return entitlements_until(user_ids=[user_id], feature=feature)[user_id]


def entitlements_until(
    *, user_ids: Collection[int], feature: str
) -> dict[int, tuple[bool, dt.datetime | None]]:
    """`entitlement_until` for many users in one query: an answer for every id asked."""
    rows = Entitlement.objects.filter(_in_force(), user_id__in=user_ids).values_list(
        "user_id", "product__features", "valid_until"
    )
    ends: dict[int, list[dt.datetime | None]] = {}
    for user_id, features, until in rows:
        if feature in (features or []):
            ends.setdefault(user_id, []).append(until)
    answers: dict[int, tuple[bool, dt.datetime | None]] = {}
    for user_id in user_ids:
        held = ends.get(user_id)
        if not held:
            answers[user_id] = (False, None)
        elif None in held:
            answers[user_id] = (True, None)
        else:
            answers[user_id] = (True, max(e for e in held if e is not None))
    return answers


def features_of(*, user_id: int) -> set[str]:
    """Every feature the user holds now."""
    held: set[str] = set()
    rows = Entitlement.objects.filter(_in_force(), user_id=user_id).values_list(
        "product__features", flat=True
    )
    for features in rows:
        held.update(features or [])
    return held


def plans() -> QuerySet[Price]:
    """Active prices of active products, cheapest first within a product."""
    return (
        Price.objects.filter(active=True, product__active=True)
        .select_related("product")
        .order_by("product__name", "kind", "amount_minor")
    )


def purchases_of(*, user_id: int) -> QuerySet[Order]:
    """The user's orders that got past checkout (paid, then perhaps refunded or expired)."""
    return (
        Order.objects.filter(user_id=user_id)
        .exclude(status__in=[OrderStatus.PENDING, OrderStatus.CANCELED])
        .select_related("price__product")
        .order_by("-ordered_at")
    )


def active_entitlements(*, user_id: int) -> QuerySet[Entitlement]:
    return (
        Entitlement.objects.filter(_in_force(), user_id=user_id)
        .select_related("product", "order")
        .order_by("valid_until")
    )


def product_for_feature(*, feature: str) -> Product | None:
    """A product that sells `feature` (for links from a locked feature to its plans)."""
    for product in Product.objects.filter(active=True):
        if feature in (product.features or []):
            return product
    return None
