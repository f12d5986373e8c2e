"""The one place every product asks whether a user holds a paid feature."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from .models import Entitlement


def user_has_entitlement(*, user_id: int, feature: str) -> bool:
    now = timezone.now()
    return Entitlement.objects.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=now), user_id=user_id, feature=feature
    ).exists()
