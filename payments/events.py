"""Real-time events payments emits: a user's entitlements changed (bought, refunded,
expired). Products whose pages show paid features join the group and re-ask the selector."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from realtime.events import Event


class EntitlementsChanged(Event):
    """The features the user holds now; handled as `payments_entitlements`."""

    type: Literal["payments.entitlements"] = "payments.entitlements"
    features: list[str]

    @field_validator("features")
    @classmethod
    def _sorted(cls, features: list[str]) -> list[str]:
        return sorted(features)
