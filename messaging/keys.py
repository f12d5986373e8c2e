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


def bot_send_rate_key(bot_id: int) -> str:
    """Token bucket of one bot's sendMessage calls."""
    return key("messaging", "botsend", bot_id)


def bot_user_rate_key(user_id: int) -> str:
    """Token bucket of one user's messages to bots (each becomes an update for a bot)."""
    return key("messaging", "botuser", user_id)


def bot_wake_topic(bot_id: int) -> str:
    """realtime.wakeup topic of one bot's long polls: a new update for it."""
    return f"bot.{bot_id}"


def bot_webhook_lock_key(bot_id: int) -> str:
    """Held while one worker delivers a bot's updates to its webhook, in order."""
    return key("messaging", "bothook", bot_id)
