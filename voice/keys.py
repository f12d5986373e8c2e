"""Every Redis key and Channels group CBLINE uses, in one place (built on realtime.keys.key,
so the run's prefix applies). Transmission meta, audio, recipients and the recent list are
voice/relay.py's (under "voice:tx:*" and "voice:ch:*")."""

from __future__ import annotations

from realtime.keys import key


# --- Channels groups (control messages; audio bypasses them through the relay).
def channel_group(channel_id: int) -> str:
    """Every socket joined to one channel: floor.taken/released, member.* events."""
    return f"voice.chan.{channel_id}"


def voice_user_group(user_id: int) -> str:
    """Every CBLINE socket of one user (moderation, identity changes). Not realtime's
    user_group: other products' sockets are in that one and have no handler for these."""
    return f"voice.user.{user_id}"


# --- Redis keys.
def floor_key(channel_id: int) -> str:
    """The current talker: set NX with a PX of the maximum transmission length."""
    return key("voice", "floor", channel_id)


def tx_seq_key() -> str:
    """INCR counter handing out transmission ids (unique across processes)."""
    return key("voice", "txseq")


def sockets_key(channel_id: int) -> str:
    """Hash: socket (Channels channel name) -> {"user_id", "country"} of sockets joined now."""
    return key("voice", "sockets", channel_id)


def geo_key() -> str:
    """GEO set of users who share a location, member = user id."""
    return key("voice", "geo")


def location_key(user_id: int) -> str:
    """Marks a user's GEO entry as live; expires unless the client refreshes it."""
    return key("voice", "loc", user_id)


def sanctions_version_key(user_id: int) -> str:
    """Bumped whenever any of the user's channel sanctions changes (voice/signals.py): a
    socket's cached sanctions hold while this is unchanged."""
    return key("voice", "sanctver", user_id)


def password_attempts_key(channel_id: int, user_id: int) -> str:
    """Token bucket of one user's password attempts on one channel (checked before hashing)."""
    return key("voice", "pwtry", channel_id, user_id)
