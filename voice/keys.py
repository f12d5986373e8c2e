"""Every Redis key and Channels group CBLINE uses, in one place (built on realtime.keys.key,
so the run's prefix applies)."""

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
    """The current talker: "<tx_id>|<json>", a lease of VOICE_FLOOR_LEASE_SECONDS that the
    talker's socket renews while it talks."""
    return key("voice", "floor", channel_id)


def process_floors_key(process_id: str) -> str:
    """Hash: channel id -> floor value, of the floors the process's sockets hold (a survivor
    releases and announces them if the process dies)."""
    return key("voice", "proc", process_id, "floors")


def process_sockets_key(process_id: str) -> str:
    """Hash: channel name -> channel id, of the process's sockets joined to a channel."""
    return key("voice", "proc", process_id, "sockets")


def tx_seq_key() -> str:
    """INCR counter handing out transmission ids (unique across processes)."""
    return key("voice", "txseq")


def sockets_key(channel_id: int) -> str:
    """Hash: socket (Channels channel name) -> {"user_id", "country"} of sockets joined now."""
    return key("voice", "sockets", channel_id)


def geo_key() -> str:
    """GEO set of users who share a location, member = user id."""
    return key("voice", "geo")


def geo_deadlines_key() -> str:
    """Sorted set: user id -> when their GEO entry expires (epoch seconds), as their
    location_key does: what is past is pruned from the GEO set (services.locations_expire)."""
    return key("voice", "geo", "until")


def location_key(user_id: int) -> str:
    """Marks a user's GEO entry as live; expires unless the client refreshes it."""
    return key("voice", "loc", user_id)


def location_moves_key(user_id: int) -> str:
    """Token bucket of the user's location moves (services.location_set). No coordinates."""
    return key("voice", "locmoves", user_id)


def process_located_key(process_id: str) -> str:
    """Hash: channel name -> user id, of the process's sockets that shared a location (a
    survivor clears those locations if the process dies)."""
    return key("voice", "proc", process_id, "located")


def sanctions_version_key(user_id: int) -> str:
    """Bumped whenever any of the user's channel sanctions changes (voice/signals.py): a
    socket's cached sanctions hold while this is unchanged."""
    return key("voice", "sanctver", user_id)


def channel_sanctions_version_key(channel_id: int) -> str:
    """Bumped whenever any sanction in the channel changes: a process's cached list of the
    channel's bans (who a press leaves out) holds while this is unchanged."""
    return key("voice", "chansanctver", channel_id)


def password_attempts_key(channel_id: int, user_id: int) -> str:
    """Token bucket of one user's password attempts on one channel (checked before hashing)."""
    return key("voice", "pwtry", channel_id, user_id)


# --- the relay (voice/relay.py through realtime/fanout.py).
def pubsub_channel(channel_id: int) -> str:
    """Redis pub/sub channel of one voice channel: control messages and audio packets."""
    return key("voice", "ch", channel_id, "pub")


def relay_client_name(suffix: str) -> str:
    """CLIENT SETNAME of the relay's connections (operators; the reconnect test)."""
    return key("voice-relay") + ":" + suffix


# --- transmissions (voice/transmissions.py): meta, audio and recipients live
# VOICE_AUDIO_TTL_SECONDS.
def tx_key(tx_id: int) -> str:
    """Hash: one transmission's meta (talker, channel, start, end, duration, mode)."""
    return key("voice", "tx", tx_id)


def tx_audio_key(tx_id: int) -> str:
    """List: one transmission's packets, for replay to a listener who missed it."""
    return key("voice", "tx", tx_id, "audio")


def tx_recipients_key(tx_id: int) -> str:
    """Set: who may hear the transmission (absent: everyone in the channel)."""
    return key("voice", "tx", tx_id, "recipients")


def recent_key(channel_id: int) -> str:
    """Sorted set: the channel's transmissions still on the server, by start time."""
    return key("voice", "ch", channel_id, "recent")


def held_bytes_key(channel_id: int, window: int) -> str:
    """Bytes of audio the channel stored in one time window (the held-audio cap)."""
    return key("voice", "ch", channel_id, "held", window)
