"""CallsApp's limits on writes: a token bucket in Redis (realtime.ratelimit.allow), shared by
every process, whose refusal is the spec's M_LIMIT_EXCEEDED (429) with a retry delay."""

from __future__ import annotations

from realtime.ratelimit import allow

from .errors import rate_limited


def rate_checked(
    key: str,
    *,
    capacity: int,
    per_second: float,
    detail: str,
    cost: int = 1,
    retry_after_ms: int = 5000,
) -> None:
    """Take `cost` tokens of the bucket at `key`, or refuse with `detail`."""
    if not allow(key, capacity=capacity, per_second=per_second, cost=cost):
        raise rate_limited(detail, retry_after_ms=retry_after_ms)
