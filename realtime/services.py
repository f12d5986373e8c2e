"""Writes of realtime/ that other apps call."""

from __future__ import annotations

from .events import send_on_commit
from .keys import user_group


def user_sockets_close(*, user_id: int) -> None:
    """Close every open socket of the user, on every process (logout, deactivation)."""
    send_on_commit(user_group(user_id), {"type": "session.logout"})
