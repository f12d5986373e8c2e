"""/ws/videochat/: matchmaking, WebRTC signalling and text chat between two strangers.

Thin by design: each handler parses (the pydantic schema), calls a service of
videochat/matching.py with this socket's `Seat`, and sends the outcome. The queue and the
pairing are matchmaking's (Redis, atomic, shared by every process); the partner's socket may
be on another process. Protocol: docs/protocols/videochat.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from django.conf import settings

from payments.keys import entitlements_group
from realtime.consumers import BaseConsumer
from realtime.ratelimit import LocalBucket
from realtime.rawsocket import SCOPE_KEY, Write, text_frame

from . import events, geo, matching
from .keys import videochat_user_group
from .matching import Outcome, Seat
from .schemas import Chat, Hello, Next, QueueJoin, QueueLeave, Signal, VideochatInbound

log = logging.getLogger(__name__)


class VideochatConsumer(BaseConsumer):
    inbound = VideochatInbound
    rate_scope = "videochat"

    seat: Seat | None = None
    heartbeat_task: asyncio.Task[None] | None = None
    bucket: LocalBucket | None = None
    closing = False  # the server decided to close (banned, replaced)

    # --- lifecycle
    async def on_connect(self) -> None:
        assert self.user_id is not None
        self.bucket = LocalBucket(self.rate_capacity, self.rate_per_second)
        # Joined first: a ban decided while the seat is being claimed still reaches us.
        await self.join(videochat_user_group(self.user_id))
        # Payments' announcements of a purchase, refund or expiry end the filters read at hello.
        await self.join(entitlements_group(self.user_id))
        # The IP is looked up and forgotten; only the country stays, in memory.
        self.seat = await matching.seat_open(
            user=self.user,
            channel_name=self.channel_name,
            client_ip=geo.scope_client_ip(self.scope),
        )
        self.heartbeat_task = asyncio.create_task(self._heartbeat())

    async def on_disconnect(self, code: int) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        if self.seat is not None:
            await matching.seat_close(self.seat)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(settings.VIDEOCHAT_HEARTBEAT_SECONDS)
            try:
                await matching.seat_heartbeat(self._seat)
            except Exception:
                log.exception("videochat heartbeat failed for user %s", self.user_id)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Refused at the door (no seat) or closing: what the client sent before it heard is
        # dropped unanswered (nothing may be sent after the close).
        if self.seat is None or self.closing:
            return
        await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def rate_allow(self) -> bool:
        # A user has one video chat socket (a newer one replaces the older, and connects are
        # rate-limited per user), so this socket's own bucket is the user's: no Redis round
        # trip per message. Before on_connect made it, nothing is let through.
        return self.bucket is not None and self.bucket.allow()

    # --- client messages (parsed by BaseConsumer against VideochatInbound)
    async def on_hello(self, msg: Hello) -> None:
        await self._speak(await matching.hello(self._seat, msg))

    async def on_queue_join(self, msg: QueueJoin) -> None:
        await self._speak(await matching.queue_join(self._seat))

    async def on_queue_leave(self, msg: QueueLeave) -> None:
        await self._speak(await matching.queue_leave(self._seat))

    async def on_next(self, msg: Next) -> None:
        await self._speak(await matching.next_partner(self._seat, msg.match_id))

    async def on_signal(self, msg: Signal) -> None:
        await matching.signal_relay(self._seat, msg)

    async def on_chat(self, msg: Chat) -> None:
        await self._speak(await matching.chat_send(self._seat, msg))

    # --- events from the partner's socket (any process) or from staff; none before the seat
    async def videochat_matched(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            matched = events.Matched.model_validate(event)
            await self._speak(await matching.partner_matched(self.seat, matched))

    async def videochat_ended(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            ended = events.Ended.model_validate(event)
            await self._speak(await matching.partner_ended(self.seat, ended))

    async def videochat_signal(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            signal = events.Signal.model_validate(event)
            await self._speak(matching.partner_signal(self.seat, signal))

    async def videochat_chat(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            line = events.Chat.model_validate(event)
            await self._speak(await matching.partner_chat(self.seat, line))

    async def videochat_banned(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            await self._speak(await matching.ban_reached(self.seat))

    async def videochat_replaced(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            await self._speak(await matching.seat_replaced(self.seat))

    async def payments_entitlements(self, event: dict[str, Any]) -> None:
        if self.seat is not None:
            matching.entitlements_changed(self.seat)

    # --- helpers
    @property
    def _seat(self) -> Seat:
        assert self.seat is not None  # on_connect either made it or closed the socket
        return self.seat

    async def _speak(self, outcome: Outcome) -> None:
        if outcome.frames and not self._write_raw(outcome):
            for frame in outcome.frames:
                await self.send_model(frame)
        if outcome.close_code is not None:
            self.closing = True
            await self.close(code=outcome.close_code)

    def _write_raw(self, outcome: Outcome) -> bool:
        """The outcome's frames framed here and written in one go below ASGI, where the server
        allows (realtime.rawsocket): the ASGI send path cost about 30 us a frame and a write
        system call each, a match.ended and the next queue frame two (benchmarks/matchmaking.py).
        False when nothing was written (another server, the socket behind or closing): the
        frames then take the ASGI path, which waits for a slow reader instead of refusing."""
        raw = self.scope.get(SCOPE_KEY)
        if raw is None:
            return False
        data = b"".join(text_frame(frame.model_dump_json().encode()) for frame in outcome.frames)
        return bool(raw.write(data) is Write.SENT)
