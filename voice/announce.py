"""member.joined, coalesced: the joins of a channel that come while its last announcement is
on its way go out together, as one group event.

A reconnect storm brings a channel's members back at once (benchmarks/reconnect_storm.py:
5,000 joins into channels of 50): announced one by one, each join was a group send of its own
(four Redis round trips) and a message for each process to read. Here a process sends a
channel's first join at once and, while that send is in flight, keeps the joins that follow
for the next one: no delay when joins are rare, one send per round trip when they crowd in.
What every member sees is unchanged: a member.joined frame per joiner, rendered once here for
all of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from realtime.batching import PerLoop
from realtime.events import send_now

from .events import Joiner, MembersJoined
from .keys import channel_group
from .schemas import Member
from .schemas import MemberJoined as MemberJoinedFrame

log = logging.getLogger(__name__)


class Announcer:
    """One per event loop (`current()`)."""

    def __init__(self) -> None:
        self._queued: dict[int, list[Joiner]] = {}  # channel id -> joins not yet sent
        self._sending: dict[int, asyncio.Task[None]] = {}  # channel id -> its sender

    def joined(self, channel_id: int, origin: str, member: Member) -> None:
        """Queue the join's announcement; it is sent with whatever else is queued."""
        # Rendered here once, not by each of the channel's sockets (49 a joiner in a channel
        # of 50 filling up: most of a storm's announcement cost).
        frame = MemberJoinedFrame(member=member).model_dump_json()
        joiner = Joiner(origin=origin, member=member, frame=frame)
        self._queued.setdefault(channel_id, []).append(joiner)
        if channel_id not in self._sending:
            # A context of its own: not the structlog connection id of the socket that joined.
            task = asyncio.get_running_loop().create_task(
                self._send(channel_id), context=contextvars.Context()
            )
            self._sending[channel_id] = task

    async def settled(self, channel_id: int) -> None:
        """Wait until the channel's queued joins are sent: a leave or an update announced
        after them must not overtake them."""
        task = self._sending.get(channel_id)
        if task is not None:
            await asyncio.shield(task)

    async def _send(self, channel_id: int) -> None:
        try:
            while joined := self._queued.pop(channel_id, None):
                try:
                    await send_now(channel_group(channel_id), MembersJoined(joined=joined))
                except Exception as exc:  # best effort, as every live push
                    log.warning("member.joined to channel %s not sent: %r", channel_id, exc)
        finally:
            del self._sending[channel_id]


_announcers = PerLoop(Announcer)


def current() -> Announcer:
    return _announcers.get()
