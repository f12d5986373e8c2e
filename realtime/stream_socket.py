"""Serve one device's durable stream over a socket: `hello{last_seq}` sends the backlog,
`ack{seq}` trims it, a nudge from `stream_append` (or a ping) sends what is new.

Mix into a `BaseConsumer` subclass whose `inbound` includes `Hello` and `Ack`, and call
`stream_start(device_pk)` from `on_connect`. Channels runs one handler at a time per
consumer, so the counters below need no lock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .batching import Batcher, PerLoop
from .dbpool import pooled
from .errors import ServiceError
from .keys import stream_group
from .schemas import Ack, CaughtUp, Hello
from .stream import stream_ack, stream_ack_many, stream_last_seq, stream_read, stream_render

if TYPE_CHECKING:
    from .consumers import BaseConsumer as _Base
else:
    _Base = object

FETCH_BATCH = 100

log = logging.getLogger(__name__)


class StreamConsumerMixin(_Base):
    stream_device_pk: int | None = None
    _stream_said_hello = False
    _stream_caught_up = False
    _stream_sent = 0
    _stream_acked = 0
    # A pump stopped by a full window: the next ack must pump again. Otherwise everything
    # up to the last read was sent, and what is appended later comes with its own nudge.
    _stream_blocked = False
    # The last ack's trim, on its way (see on_ack).
    _stream_ack_pending: asyncio.Future[Any] | None = None

    async def stream_start(self, device_pk: int) -> None:
        self.stream_device_pk = device_pk
        await self.join(stream_group(device_pk))

    async def on_hello(self, msg: Hello) -> None:
        device_pk = self._stream_device()
        last = await pooled(stream_last_seq)(device_pk=device_pk)
        # The client has everything up to last_seq: trim it. A client ahead of the stream
        # (its device's stream was dropped) starts again from what is there.
        start = min(msg.last_seq, last)
        if start:
            await pooled(stream_ack)(device_pk=device_pk, seq=start)
        self._stream_sent = self._stream_acked = start
        self._stream_said_hello = True
        self._stream_caught_up = False
        await self.stream_pump()

    async def on_ack(self, msg: Ack) -> None:
        device_pk = self._stream_device()
        if not self._stream_said_hello:
            raise ServiceError("hello_first", "say hello{last_seq} before acking")
        if msg.seq > self._stream_sent:
            await self.before_pong()  # a refusal, too, comes after what came before it
            raise ServiceError(
                "ack_ahead", f"seq {msg.seq} was not sent on this socket ({self._stream_sent})"
            )
        if msg.seq > self._stream_acked:
            # Not awaited: the socket goes on to its next frame and its deliveries while the
            # trim is on its way (in a batch that gathers the process's acks for a few ms),
            # so a delivery never waits behind the ack of the one before. The window counts
            # the ack now: what it lets through is read after what was sent, never below.
            # Acks are cumulative, so a trim that fails is made good by the next ack, or by
            # the next hello{last_seq}.
            self._stream_acked = msg.seq
            self._stream_ack_pending = _acks.get().submit((device_pk, msg.seq))
            self._stream_ack_pending.add_done_callback(_ack_failed)
        if self._stream_blocked:
            await self.stream_pump()

    async def before_pong(self) -> None:
        """A pong (and an ack refused) comes once this socket's acks are applied: tests and
        clients may take it as the barrier it was when an ack was awaited in turn."""
        pending, self._stream_ack_pending = self._stream_ack_pending, None
        if pending is not None:
            await asyncio.wait([pending])

    async def stream_nudge(self, event: dict[str, Any]) -> None:
        if not self._stream_said_hello:
            return
        frames = event.get("frames") or []
        if frames and frames[-1]["seq"] <= self._stream_sent:
            return  # a read after an earlier nudge sent these already
        room = settings.STREAM_WINDOW - (self._stream_sent - self._stream_acked)
        if frames and frames[0]["seq"] == self._stream_sent + 1 and len(frames) <= room:
            # The next items, rendered by their writer: no read. Seqs are contiguous per
            # device, so nothing can lie between what was sent and these.
            for frame in frames:
                await self.send_json(frame)
            self._stream_sent = frames[-1]["seq"]
            return
        await self.stream_pump()  # a gap (nudges from two writers crossed), a full window

    async def on_ping(self) -> None:
        # A nudge lost on the way (a full channel, a GC pause) costs a delay until here.
        if self._stream_said_hello:
            await self.stream_pump()

    async def stream_pump(self) -> None:
        """Send what is new, within the window of unacked items."""
        device_pk = self._stream_device()
        while True:
            room = settings.STREAM_WINDOW - (self._stream_sent - self._stream_acked)
            self._stream_blocked = room <= 0
            if self._stream_blocked:
                return
            limit = min(room, FETCH_BATCH)
            frames = await pooled(_fetch)(device_pk, self._stream_sent, limit)
            for frame in frames:
                await self.send_json(frame)
            if frames:
                self._stream_sent = frames[-1]["seq"]
            # A short read reached the end: a writer holds its device's head row until it
            # commits, so no item below what was read can still appear.
            if len(frames) < limit:
                break
        if not self._stream_caught_up:
            self._stream_caught_up = True
            await self.send_model(CaughtUp(seq=self._stream_sent))

    def _stream_device(self) -> int:
        if self.stream_device_pk is None:
            raise ServiceError("no_stream", "this socket has no device stream")
        return self.stream_device_pk


def _fetch(device_pk: int, after_seq: int, limit: int) -> list[dict[str, Any]]:
    items = stream_read(device_pk=device_pk, after_seq=after_seq, limit=limit)
    return stream_render(device_pk=device_pk, items=items)


def _ack_failed(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("stream: an ack's trim failed: %r", done.exception())


class _AckBatcher(Batcher[tuple[int, int]]):
    """The acks of a process's sockets, one transaction in flight: those that come while one
    is on its way, or within `gather` of the first, go together in the next (one DELETE, one
    "delivered" tick per sender and room, one BEGIN/COMMIT). Items are `(device_pk, seq)`,
    the seq checked by the socket against what it sent. No socket waits on the reply (see
    StreamConsumerMixin.on_ack), so the window costs only the trim's and the tick's delay."""

    gather = settings.STREAM_ACK_GATHER_MS / 1000

    async def send_batch(self, items: list[tuple[int, int]]) -> list[Any]:
        try:
            # One ack too: on PostgreSQL its statement is then the batch's (one round trip,
            # prepared), not stream_ack's transaction.
            await pooled(stream_ack_many)(acks=items)
            return [None] * len(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            # A deadlock with another process, say: each alone, as unbatched.
            log.info("stream: a batch of %d acks failed; acking each alone", len(items))
        replies: list[Any] = []
        for device_pk, seq in items:
            try:
                replies.append(await pooled(stream_ack)(device_pk=device_pk, seq=seq, limit=seq))
            except Exception as exc:
                replies.append(exc)
        return replies


_acks = PerLoop(_AckBatcher)
