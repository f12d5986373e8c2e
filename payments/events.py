"""Real-time events payments emits: a user's entitlements changed (bought, refunded,
expired). Products whose pages show paid features join the group and re-ask the selector."""

from __future__ import annotations

from typing import Any


def entitlements_group(user_id: int) -> str:
    """Every socket that shows something this user may have to pay for."""
    return f"payments.user.{user_id}"


def entitlements_changed(*, features: list[str]) -> dict[str, Any]:
    """The features the user holds now; handled as `payments_entitlements`."""
    return {"type": "payments.entitlements", "features": sorted(features)}
