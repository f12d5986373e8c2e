"""Writes of realtime/ that other apps call: closing sockets, on every process, after the
transaction that decided it commits."""

from __future__ import annotations

from . import closecodes
from .events import send_on_commit
from .keys import device_group, session_group, user_group


def _close(group: str, code: int) -> None:
    send_on_commit(group, {"type": "socket.close", "code": code})


def session_sockets_close(*, session_key: str, code: int = closecodes.LOGGED_OUT) -> None:
    """Close the sockets of one login session (logout): the user's other sessions stay."""
    _close(session_group(session_key), code)


def device_sockets_close(*, device_pk: int, code: int = closecodes.LOGGED_OUT) -> None:
    """Close the sockets of one device ("forget device")."""
    _close(device_group(device_pk), code)


def user_sockets_close(*, user_id: int, code: int = closecodes.FORBIDDEN) -> None:
    """Close every socket of the user (deactivation, deletion: FORBIDDEN; a password change:
    REAUTHENTICATE, so that sessions still valid come straight back)."""
    _close(user_group(user_id), code)
