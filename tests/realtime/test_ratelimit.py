"""Token buckets in Redis: the refill follows Redis's clock, so client clocks that disagree
(two hosts, or calls whose time was read before they were sent) cannot mint tokens."""

from __future__ import annotations

import itertools

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
