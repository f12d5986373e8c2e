"""The CallsApp socket's rate limit: a user's bucket in Redis, shared by their devices'
sockets, taken a few tokens at a time (realtime.ratelimit.LeasedTokens, up to
messaging.consumers.RATE_LEASE)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from messaging import consumers
from messaging.consumers import RATE_LEASE, MessagingConsumer
from tests.messaging.conftest import member, sync_socket

pytestmark = pytest.mark.django_db(transaction=True)

CAPACITY = 3 * RATE_LEASE + 4  # not a multiple of the lease: the last tokens one by one


async def pings(comm: WebsocketCommunicator, n: int) -> list[str]:
    """Send n pings; the answer to each: "pong" or the error's code."""
    for _ in range(n):
        await comm.send_json_to({"type": "ping"})
    answers = []
    for _ in range(n):
        frame: dict[str, Any] = await comm.receive_json_from()
        answers.append(frame["type"] if frame["type"] == "pong" else frame["code"])
    return answers


@pytest.fixture
def tight_bucket(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(MessagingConsumer, "rate_capacity", CAPACITY)
    monkeypatch.setattr(MessagingConsumer, "rate_per_second", 0.001)  # no refill meanwhile
    calls: list[int] = []
    allow = consumers.allow_async

    async def counted(key: str, **kwargs: Any) -> bool:
        calls.append(kwargs.get("cost", 1))
        return await allow(key, **kwargs)

    monkeypatch.setattr(consumers, "allow_async", counted)
    return calls


async def test_a_flood_is_refused_past_the_capacity_at_a_round_trip_per_lease(tight_bucket):
    alice = await sync_to_async(member)()
    comm = await sync_socket(alice)  # one ping already
    assert await pings(comm, CAPACITY - 1) == ["pong"] * (CAPACITY - 1)
    # Leases of 1, 2, 4, 8 and 8 (23 tokens); 8 refused, so 1, 1, 2 (growing again); 4
    # refused, 1: 11 round trips for the 28 frames, against one a frame.
    assert tight_bucket == [1, 2, 4, 8, 8, 8, 1, 1, 2, 4, 1]
    assert await pings(comm, 5) == ["rate_limited"] * 5
    await comm.disconnect()


async def test_a_users_devices_share_one_bucket(tight_bucket):
    alice = await sync_to_async(member)()
    second = await sync_to_async(member)(alice.user)
    one, two = await sync_socket(alice), await sync_socket(second)
    answers = await pings(one, 1) + await pings(two, CAPACITY) + await pings(one, CAPACITY)
    # What one socket leased and did not use is the most the user can be ahead.
    assert CAPACITY - RATE_LEASE <= answers.count("pong") + 2 <= CAPACITY
    await one.disconnect()
    await two.disconnect()
