"""Redis keys and group names of messaging/ (see realtime.keys for the namespace)."""

from __future__ import annotations

from realtime.keys import key


def claim_rate_key(user_id: int) -> str:
    """Token bucket of one user's one-time key claims (a claim flood drains nobody's pool)."""
    return key("messaging", "claim", user_id)


def post_rate_key(user_id: int) -> str:
    """Token bucket of one user's community posts."""
    return key("messaging", "post", user_id)


def callsapp_user_group(user_id: int) -> str:
    """Every CallsApp socket of one user (community pushes). Not realtime's user_group: other
    products' sockets are in that one and have no handler for these."""
    return f"callsapp.user.{user_id}"
