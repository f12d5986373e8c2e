"""/ws/payments/: tells a page which paid features its user holds, at once when a purchase is
confirmed, refunded or expires, so a locked feature unlocks without a reload. It claims
nothing (unlike the video chat socket), so any page may keep one open."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from realtime.consumers import BaseConsumer

from . import selectors
from .keys import entitlements_group
from .schemas import Entitlements


class EntitlementsConsumer(BaseConsumer):
    rate_scope = "payments"

    async def on_connect(self) -> None:
        assert self.user_id is not None
        await self.join(entitlements_group(self.user_id))
        await self._send_features()

    async def payments_entitlements(self, event: dict[str, Any]) -> None:
        # Ask the selector rather than trust the event's list: events may cross.
        await self._send_features()

    async def _send_features(self) -> None:
        assert self.user_id is not None
        features = await database_sync_to_async(selectors.features_of)(user_id=self.user_id)
        await self.send_model(Entitlements(features=sorted(features)))
