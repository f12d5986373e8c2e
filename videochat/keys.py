"""Every Redis key and Channels group video chat uses, in one place (built on
realtime.keys.key, so the run's prefix applies)."""

from __future__ import annotations

from realtime.keys import key, rate_key

# Matchmaking's keys share one hash tag, so that its script runs on Redis Cluster unchanged.
MATCHMAKING_TAG = "{vcmm}"
MATCHMAKING_PARTS = ("idx", "wait", "pair", "last", "ttl", "stats")


def matchmaking_key(part: str) -> str:
    """One of matchmaking's six keys (videochat/lua/matchmaking.lua's header says which)."""
    return key("vc", MATCHMAKING_TAG, part)


def socket_key(user_id: int) -> str:
    """The channel name of the user's current video chat socket (one per user)."""
    return key("videochat", "socket", user_id)


# --- Channels groups.
def videochat_user_group(user_id: int) -> str:
    """The user's video chat sockets (a ban closes them)."""
    return f"videochat.user.{user_id}"


def report_rate_key(user_id: int) -> str:
    """Token bucket of the reports one user files (each may carry an image)."""
    return rate_key("videochat-report", user_id)
