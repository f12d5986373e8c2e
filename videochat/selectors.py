"""Reads of videochat/ that views, the consumer and services share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from payments.selectors import entitlement_until, entitlements_until, has_entitlement

from .models import Appeal, AppealStatus, Ban

FILTERS_FEATURE = "videochat.filters"
# Providers whose account id a ban follows to new accounts.
BAN_FOLLOWS_PROVIDERS = ("facebook", "vk")


def filters_allowed(*, user_id: int) -> bool:
    """Gender/country filters are paid; payments decides who holds them."""
    return has_entitlement(user_id=user_id, feature=FILTERS_FEATURE)


def filters_allowed_until(*, user_id: int) -> tuple[bool, dt.datetime | None]:
    """`filters_allowed`, and until when the paid time runs (None: no end)."""
    return entitlement_until(user_id=user_id, feature=FILTERS_FEATURE)


def filters_allowed_until_many(
    *, user_ids: Collection[int]
) -> dict[int, tuple[bool, dt.datetime | None]]:
    """`filters_allowed_until` for many users in one query."""
    return entitlements_until(user_ids=user_ids, feature=FILTERS_FEATURE)


def social_uids(*, user_id: int) -> dict[str, list[str]]:
    """The user's Facebook and VK account ids (allauth SocialAccount)."""
    from allauth.socialaccount.models import SocialAccount

    uids: dict[str, list[str]] = {p: [] for p in BAN_FOLLOWS_PROVIDERS}
    rows = SocialAccount.objects.filter(user_id=user_id, provider__in=BAN_FOLLOWS_PROVIDERS)
    for provider, uid in rows.values_list("provider", "uid"):
        uids[provider].append(uid)
    return uids


def active_ban_for(user: User) -> Ban | None:
    """The ban in force on this account, or on the Facebook/VK profile it logs in with;
    the one that ends last when there are several."""
    now = timezone.now()
    uids = social_uids(user_id=user.pk)
    who = Q(user_id=user.pk)
    if uids["facebook"]:
        who |= Q(facebook_uid__in=uids["facebook"])
    if uids["vk"]:
        who |= Q(vk_uid__in=uids["vk"])
    return (
        Ban.objects.filter(who, starts_at__lte=now, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )


def open_appeal(ban: Ban) -> Appeal | None:
    return ban.appeals.filter(status=AppealStatus.OPEN).first()
