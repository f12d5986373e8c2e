"""/ws/messaging/: the CallsApp sync stream of one device (docs/protocols/callsapp.md).
Thin: the durable stream does the work; messaging renders its items (selectors)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from pydantic import TypeAdapter

from accounts.selectors import meets_age_rule, meets_age_rule_loaded
from realtime.batching import Batcher, PerLoop
from realtime.consumers import BaseConsumer
from realtime.dbpool import pooled
from realtime.errors import ServiceError
from realtime.keys import rate_key
from realtime.ratelimit import LeasedTokens, allow_async
from realtime.schemas import Ack, Hello
from realtime.stream_socket import StreamConsumerMixin

from .errors import under_age
from .keys import callsapp_user_group
from .schemas import MessagingInbound, Sent, SocketSend, SyncFrame
from .selectors import AGE_RULE, key_counts
from .services import SendRequest, room_event_send, room_events_send

log = logging.getLogger(__name__)

# Rate tokens a socket takes from its user's bucket at once, at most: every frame is a send
# or an ack, and a Redis round trip for each cost a tenth of the server's CPU
# (realtime.ratelimit.LeasedTokens; the user's devices share the bucket still).
RATE_LEASE = 8


class MessagingConsumer(StreamConsumerMixin, BaseConsumer):
    inbound = TypeAdapter(MessagingInbound)
    rate_scope = "messaging"
    rate_tokens: LeasedTokens | None = None

    async def rate_allow(self) -> bool:
        assert self.user_id is not None
        if self.rate_tokens is None:
            self.rate_tokens = LeasedTokens(RATE_LEASE)
        take = functools.partial(
            _take,
            rate_key(self.rate_scope, self.user_id),
            capacity=self.rate_capacity,
            per_second=self.rate_per_second,
        )
        return await self.rate_tokens.allow(take)

    async def on_connect(self) -> None:
        # BaseConsumer has closed any socket without a valid (user, device, session).
        if self.device_pk is None:
            raise ServiceError("no_device", "this session has no device: sign in again")
        # The profile came with the session's read: no query, unless it did not.
        allowed = meets_age_rule_loaded(self.user, AGE_RULE)
        if allowed is None:
            allowed = await pooled(meets_age_rule)(self.user, AGE_RULE)
        if not allowed:
            raise under_age()  # closed with FORBIDDEN: the client does not come back
        await self.stream_start(self.device_pk)

    async def on_hello(self, msg: Hello) -> None:
        # Current key counts first (no ack needed): the OlmMachine tops its keys up from them.
        await self.send_key_counts()
        await super().on_hello(msg)

    async def on_send(self, msg: SocketSend) -> None:
        if msg.ack is not None:
            # Its own refusal (no ref): the send does not depend on it.
            await self.guard(self.on_ack(Ack(type="ack", seq=msg.ack)), None)
        # Refusals carry the txn_id as their ref, so the client can match them.
        await self.guard(self._send(msg), msg.txn_id)

    async def _send(self, msg: SocketSend) -> None:
        assert self.device is not None
        request = SendRequest(
            device=self.device, room_id=msg.room_id, txn_id=msg.txn_id, content=msg.content
        )
        answer = await _sends.get().call(request)
        await self.send_model(Sent(txn_id=msg.txn_id, event_id=answer["event_id"]))

    def connect_groups(self) -> list[str]:
        assert self.user_id is not None
        return [*super().connect_groups(), callsapp_user_group(self.user_id)]

    async def messaging_community(self, event: dict[str, Any]) -> None:
        """messaging.communities: a post, a deletion or a like count in one of the user's
        communities; the frame was built (from its schema) by the service."""
        await self.send_json(event["frame"])

    async def messaging_bot(self, event: dict[str, Any]) -> None:
        """messaging.bots: a message in one of the user's bot chats; the frame was built
        (from its schema) by the service."""
        await self.send_json(event["frame"])

    async def messaging_counts(self, event: dict[str, Any]) -> None:
        """Someone claimed one of this device's keys."""
        if self._stream_said_hello:
            await self.send_key_counts()

    async def send_key_counts(self) -> None:
        counts = await pooled(key_counts)(self._stream_device())
        await self.send_model(SyncFrame(seq=None, sync=counts))


class _SendBatcher(Batcher[SendRequest]):
    """The sends of a process's sockets, one transaction in flight: those that arrive while
    one is on its way go together in the next (a group commit: room_events_send, on
    PostgreSQL one statement, so a batch of one too). Idle, a send goes on the next turn of
    the loop, alone."""

    async def send_batch(self, items: list[SendRequest]) -> list[Any]:
        try:
            return await pooled(room_events_send)(sends=items)
        except Exception:
            # A deadlock with another process, say: each alone, by the one-send path.
            log.info("messaging: a batch of %d sends failed; sending each alone", len(items))
        replies: list[Any] = []
        for r in items:
            try:
                replies.append(
                    await pooled(room_event_send)(
                        device=r.device,
                        room_id=r.room_id,
                        event_type=r.event_type,
                        txn_id=r.txn_id,
                        content=r.content,
                    )
                )
            except Exception as exc:
                replies.append(exc)
        return replies


_sends = PerLoop(_SendBatcher)


async def _take(key: str, cost: int, *, capacity: int, per_second: float) -> bool:
    return await allow_async(key, capacity=capacity, per_second=per_second, cost=cost)
