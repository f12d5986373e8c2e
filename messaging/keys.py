"""Redis keys and group names of messaging/ (see realtime.keys for the namespace)."""

from __future__ import annotations

from realtime.keys import key


def claim_rate_key(user_id: int) -> str:
    """Token bucket of one user's one-time key claims (a claim flood drains nobody's pool)."""
    return key("messaging", "claim", user_id)
