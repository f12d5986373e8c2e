"""Token buckets in Redis: the refill follows Redis's clock, so client clocks that disagree
(two hosts, or calls whose time was read before they were sent) cannot mint tokens."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from realtime import ratelimit
from realtime.keys import key

pytestmark = pytest.mark.django_db


def _clock_running_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls alternately read a time 1 s behind: what concurrent callers (whose time was read
    # before their call reached Redis) or hosts with skewed clocks look like to the bucket.
    ticks = itertools.cycle([2_000_000_000.0, 1_999_999_999.0])
    monkeypatch.setattr(ratelimit.time, "time", lambda: next(ticks))


def test_a_bucket_never_gives_more_than_its_burst_at_once(monkeypatch):
    _clock_running_backwards(monkeypatch)
    allowed = [ratelimit.allow(key("t-bucket"), capacity=5, per_second=0.01) for _ in range(20)]
    assert sum(allowed) == 5


async def test_connect_check_never_admits_more_than_the_burst_at_once(monkeypatch):
    _clock_running_backwards(monkeypatch)
    outcomes = [
        await ratelimit.connect_check(
            user_key=key("t-user"),
            ip_key=key("t-ip"),
            sockets_key=key("t-sockets"),
            user_limit=(5, 0.01),
            ip_limit=(100, 10.0),
            max_sockets=100,
        )
        for _ in range(20)
    ]
    assert outcomes.count(0) == 5 and set(outcomes) == {0, 1}


async def test_leases_start_at_one_token_so_many_sockets_of_a_user_each_get_a_frame_through():
    """Slow start: thirty sockets of one user opened at once each send their first frame
    within a bucket of 40 (fixed-size leases of 8 let five through, the rest were refused)."""
    calls: list[int] = []

    def taker(name: str) -> Any:
        async def take(cost: int) -> bool:
            calls.append(cost)
            bucket = key("test", name)
            return await ratelimit.allow_async(bucket, capacity=40, per_second=0.001, cost=cost)

        return take

    crowd = taker("lease-crowd")
    sockets = [ratelimit.LeasedTokens(8) for _ in range(30)]
    assert [await s.allow(crowd) for s in sockets] == [True] * 30
    # A busy socket's leases grow 1, 2, 4, 8: few round trips for many frames.
    busy, take = ratelimit.LeasedTokens(8), taker("lease-busy")
    calls.clear()
    assert [await busy.allow(take) for _ in range(31)] == [True] * 31  # 1+2+4+8+8+8
    assert calls == [1, 2, 4, 8, 8, 8]
    # 9 left: a lease of 8; then 8 refused and 1 taken; then 1 refused, at one try.
    assert [await busy.allow(take) for _ in range(10)] == [True] * 9 + [False]
    assert calls[6:] == [8, 8, 1, 1]


async def test_a_lease_taken_in_a_callers_script_counts_as_allow_does():
    """LEASE_LUA inside a script of the caller's (a CBLINE press takes its tokens with the
    floor) and LeasedTokens' wanted/settle give the frames `allow` gives, lease by lease."""
    from realtime.redis import get_async_redis

    script = ratelimit.LEASE_LUA + "return lease(KEYS[1], 40, 0.001, tonumber(ARGV[1]))"
    bucket, tokens, asked = key("test", "lease-in-script"), ratelimit.LeasedTokens(8), []

    async def frame() -> bool:
        size = tokens.wanted()
        if not size:
            return True
        asked.append(size)
        taken = await get_async_redis().eval(script, 1, bucket, size)  # type: ignore[misc]
        return tokens.settle(size, int(taken))

    assert [await frame() for _ in range(31)] == [True] * 31  # 1+2+4+8+8+8
    assert asked == [1, 2, 4, 8, 8, 8]
    # 9 left: a lease of 8; then 8 asked and 1 taken; then none left.
    assert [await frame() for _ in range(10)] == [True] * 9 + [False]
    assert asked[6:] == [8, 8, 1]
