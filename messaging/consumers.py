"""/ws/messaging/: the CallsApp sync stream of one device (docs/protocols/callsapp.md).
Thin: the durable stream does the work; messaging renders its items (selectors)."""

from __future__ import annotations

from pydantic import TypeAdapter

from realtime.consumers import BaseConsumer
from realtime.errors import ServiceError
from realtime.stream_socket import StreamConsumerMixin

from .schemas import MessagingInbound


class MessagingConsumer(StreamConsumerMixin, BaseConsumer):
    inbound = TypeAdapter(MessagingInbound)
    rate_scope = "messaging"

    async def on_connect(self) -> None:
        device = self.scope.get("device")
        if device is None:
            raise ServiceError("no_device", "this session has no device: sign in again")
        await self.stream_start(device.pk)
