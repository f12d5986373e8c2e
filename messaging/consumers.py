"""/ws/messaging/: the CallsApp sync stream of one device (docs/protocols/callsapp.md).
Thin: the durable stream does the work; messaging renders its items (selectors)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from realtime.consumers import BaseConsumer
from realtime.dbpool import pooled
from realtime.errors import ServiceError
from realtime.keys import rate_key
from realtime.ratelimit import allow_async
from realtime.schemas import Hello
from realtime.stream_socket import StreamConsumerMixin

from .schemas import MessagingInbound, Sent, SocketSend, SyncFrame
from .selectors import key_counts
from .services import room_event_send

# Tokens a socket takes from its user's bucket at once: every message is a send or an ack,
# and a Redis round trip for each cost a tenth of the server's CPU. A user's devices share
# the bucket still; a socket is ahead of it by fewer than this many frames.
RATE_LEASE = 8


class MessagingConsumer(StreamConsumerMixin, BaseConsumer):
    inbound = TypeAdapter(MessagingInbound)
    rate_scope = "messaging"
    _rate_credit = 0
    _rate_singles = 0

    async def rate_allow(self) -> bool:
        if self._rate_credit > 0:
            self._rate_credit -= 1
            return True
        assert self.user_id is not None
        take = functools.partial(
            allow_async,
            rate_key(self.rate_scope, self.user_id),
            capacity=self.rate_capacity,
            per_second=self.rate_per_second,
        )
        if self._rate_singles > 0:
            self._rate_singles -= 1
        elif await take(cost=RATE_LEASE):
            self._rate_credit = RATE_LEASE - 1
            return True
        else:
            self._rate_singles = RATE_LEASE - 1  # fewer left than a lease: one at a time
        return await take()

    async def on_connect(self) -> None:
        # BaseConsumer has closed any socket without a valid (user, device, session).
        if self.device_pk is None:
            raise ServiceError("no_device", "this session has no device: sign in again")
        await self.stream_start(self.device_pk)

    async def on_hello(self, msg: Hello) -> None:
        # Current key counts first (no ack needed): the OlmMachine tops its keys up from them.
        await self.send_key_counts()
        await super().on_hello(msg)

    async def on_send(self, msg: SocketSend) -> None:
        # Refusals carry the txn_id as their ref, so the client can match them.
        await self.guard(self._send(msg), msg.txn_id)

    async def _send(self, msg: SocketSend) -> None:
        answer = await pooled(room_event_send)(
            device=self.device,
            room_id=msg.room_id,
            event_type="m.room.encrypted",
            txn_id=msg.txn_id,
            content=msg.content,
        )
        await self.send_model(Sent(txn_id=msg.txn_id, event_id=answer["event_id"]))

    async def messaging_counts(self, event: dict[str, Any]) -> None:
        """Someone claimed one of this device's keys."""
        if self._stream_said_hello:
            await self.send_key_counts()

    async def send_key_counts(self) -> None:
        counts = await pooled(key_counts)(self._stream_device())
        await self.send_model(SyncFrame(seq=None, sync=counts))
