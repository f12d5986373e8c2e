"""The /ws/payments/ socket's messages (docs/protocols/payments.md). The client sends nothing
but pings; the server says which paid features the user holds, at connect and on change."""

from __future__ import annotations

from typing import Literal

from realtime.schemas import Outbound


class Entitlements(Outbound):
    type: Literal["entitlements"] = "entitlements"
    features: list[str]
