"""Every write of accounts/."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from realtime.errors import ServiceError

from .models import Device, User
from .selectors import meets_age_rule


def age_require(*, user: User, product: str) -> None:
    """Refuse a product to a user under its age rule (Video chat 18+, CallsApp 10+)."""
    if not meets_age_rule(user, product):
        raise ServiceError(
            "age_restricted", f"you must be old enough to use {product}", status=403
        )


@transaction.atomic
def device_register(
    *,
    user: User,
    device_id: str,
    make: str = "",
    model: str = "",
    platform: str = "",
    client_version: str = "",
) -> Device:
    """Create or refresh the device the browser names by its own id."""
    device, _ = Device.objects.update_or_create(
        user=user,
        device_id=device_id,
        defaults={
            "make": make[:64],
            "model": model[:64],
            "platform": platform[:64],
            "client_version": client_version[:64],
            "last_seen_at": timezone.now(),
        },
    )
    return device
