"""Every Redis key and Channels group name the project uses is built here, so that a reader
can see the whole live-state namespace at once and the prefix is applied everywhere."""

from __future__ import annotations

import hashlib

from django.conf import settings


def key(*parts: object) -> str:
    """A Redis key: the run's prefix, then the parts joined by ':'."""
    return settings.REDIS_KEY_PREFIX + ":".join(str(p) for p in parts)


# --- Channels groups (names are limited to ASCII alphanumerics, '-', '_' and '.').
def user_group(user_id: int) -> str:
    """Every socket of one user: deactivation or a password change closes them all."""
    return f"user.{user_id}"


def device_group(device_pk: int) -> str:
    """Every socket of one device ("forget device" closes them)."""
    return f"device.{device_pk}"


def session_group(session_key: str) -> str:
    """Every socket of one login session (logout closes them, and only them). The key is a
    credential, so the group is named by a digest of it, never the key itself."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def presence_group(user_id: int) -> str:
    """Sockets watching one user's online status."""
    return f"presence.{user_id}"


# --- Redis keys of realtime/ itself.
def presence_key(user_id: int) -> str:
    return key("presence", user_id)


def rate_key(scope: str, user_id: int) -> str:
    return key("rate", scope, user_id)


def connect_rate_key(kind: str, who: object) -> str:
    """Connect token bucket of a user ("user", id) or a client address ("ip", address)."""
    return key("connect", kind, who)


def stream_group(device_pk: int) -> str:
    """The sockets reading one device's durable stream: a nudge to read it again."""
    return f"stream.{device_pk}"


# --- process liveness (realtime/liveness.py)
def process_key(pid: str) -> str:
    """Exists while the process `pid` is alive: renewed every beat, with a short TTL."""
    return key("proc", pid)


def processes_key() -> str:
    """Sorted set: every process id that has beaten, scored by its last beat."""
    return key("procs")


def process_sockets_key(pid: str) -> str:
    """Hash: channel name -> {"u": user id, "s": shows online} of the process's sockets."""
    return key("proc", pid, "sockets")


def process_sweep_key(pid: str) -> str:
    """Set NX by the one survivor that cleans up after the dead process `pid`."""
    return key("proc", pid, "sweep")


def epoch_key() -> str:
    """A random value set once per Redis lifetime (SET NX): when it changes, Redis restarted
    or was flushed, and every socket whose state was written before is stale."""
    return key("epoch")


def wake_channel(topic: str) -> str:
    """The pub/sub channel of realtime.wakeup's `topic` (a long poll's wake-ups)."""
    return key("wake", topic)
