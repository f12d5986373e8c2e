"""Questions realtime/ asks the layers above it, answered by functions they register in
their AppConfig.ready (realtime imports no product and not accounts/). Until something
registers, everyone shows their online status, but nobody may see anyone else's: who is
online is never told to an audience nobody vouched for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def _always_shown(user: Any) -> bool:
    return True


def _none_hidden(user_ids: Iterable[int]) -> set[int]:
    return set()


def _only_self(watcher_id: int, user_ids: Iterable[int]) -> set[int]:
    return {uid for uid in user_ids if uid == watcher_id}


@dataclass
class _Presence:
    # Called in the database thread (database_sync_to_async): both may query.
    shows_online: Callable[[Any], bool] = _always_shown
    hidden_among: Callable[[Iterable[int]], set[int]] = _none_hidden
    audience: Callable[[int, Iterable[int]], set[int]] = _only_self


presence = _Presence()

# The authentication middleware may answer `shows_online` for the socket's user while it
# reads the session, in the scope under this key (the consumer asks the hook otherwise).
SHOW_ONLINE_SCOPE_KEY = "show_online"


def register_presence(
    *, shows_online: Callable[[Any], bool], hidden_among: Callable[[Iterable[int]], set[int]]
) -> None:
    """shows_online(user): may others see this user online? hidden_among(ids): which of
    these users hide their online status."""
    presence.shows_online = shows_online
    presence.hidden_among = hidden_among


def register_presence_audience(*, may_see: Callable[[int, Iterable[int]], set[int]]) -> None:
    """may_see(watcher_id, ids): which of these users the watcher may see online at all
    (e.g. contacts nobody blocked), whether or not they hide their status."""
    presence.audience = may_see


def shown_to(watcher_id: int, user_ids: Iterable[int]) -> set[int]:
    """Of `user_ids`, those whose online status `watcher_id` may see: in the watcher's
    audience and not hidden by their own choice. Queries: call it in the database thread."""
    allowed = presence.audience(watcher_id, list(user_ids))
    return allowed - presence.hidden_among(allowed) if allowed else set()
