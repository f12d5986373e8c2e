"""Writes of realtime/ that other apps call: closing sockets, on every process, after the
transaction that decided it commits; and the admission of a new socket."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from . import closecodes, metrics
from .events import PresenceRevoke, PresenceUpdate, SocketClose, send_on_commit
from .keys import (
    connect_rate_key,
    device_group,
    presence_group,
    presence_key,
    session_group,
    user_group,
)
from .opening import Opened, Opening, open_socket, supported
from .ratelimit import connect_check

_REFUSALS = {1: "user_rate", 2: "ip_rate", 3: "too_many_sockets"}


def _close(group: str, code: int) -> None:
    send_on_commit(group, SocketClose(code=code))


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


def presence_hidden(*, user_id: int) -> None:
    """The user stopped showing their online status: whoever watches them sees them go
    offline now, after the transaction that hid it commits."""
    send_on_commit(presence_group(user_id), PresenceUpdate(user_id=user_id, online=False))


def presence_revoked(*, user_id: int, others: Iterable[int]) -> None:
    """`user_id` and each of `others` may no longer see each other online (a block, their
    last shared room gone): their sockets stop watching each other, after the commit."""
    others = [o for o in others if o != user_id]
    if not others:
        return
    send_on_commit(user_group(user_id), PresenceRevoke(user_ids=others))
    for other in others:
        send_on_commit(user_group(other), PresenceRevoke(user_ids=[user_id]))


async def connect_admit(
    *, user_id: int, ip: str | None, opening: Opening | None = None
) -> tuple[int | None, Opened]:
    """(None, ...) when a new socket of `user_id` from client address `ip` may open; else
    (the close code to refuse it with, ...). Checked before the socket joins anything or
    writes a row, so a flood of connects costs one Redis call each. All three refusals say
    "try later" (reconnect with backoff): tokens refill, and the user's other sockets close.
    With `opening`, an admitted socket's groups and presence are written in the same
    round trip where the channel layer allows (realtime.opening): then `Opened.written`."""
    if opening is not None and supported():
        opened = await open_socket(user_id=user_id, ip=ip, opening=opening)
    else:
        opened = Opened(
            refusal=await connect_check(
                user_key=connect_rate_key("user", user_id),
                ip_key=connect_rate_key("ip", ip) if ip else None,
                sockets_key=presence_key(user_id),
                user_limit=(settings.WS_CONNECT_USER_BURST, settings.WS_CONNECT_USER_PER_SECOND),
                ip_limit=(settings.WS_CONNECT_IP_BURST, settings.WS_CONNECT_IP_PER_SECOND),
                max_sockets=settings.WS_MAX_SOCKETS_PER_USER,
            )
        )
    if opened.refusal == 0:
        return None, opened
    metrics.CONNECTS_REFUSED.labels(reason=_REFUSALS[opened.refusal]).inc()
    return closecodes.TRY_LATER, opened
