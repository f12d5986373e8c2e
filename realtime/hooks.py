"""Questions realtime/ asks the layers above it, answered by functions they register in
their AppConfig.ready (realtime imports no product and not accounts/). Until something
registers, everyone shows their online status."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def _always_shown(user: Any) -> bool:
    return True


def _none_hidden(user_ids: Iterable[int]) -> set[int]:
    return set()


@dataclass
class _Presence:
    # Called in the database thread (database_sync_to_async): both may query.
    shows_online: Callable[[Any], bool] = _always_shown
    hidden_among: Callable[[Iterable[int]], set[int]] = _none_hidden


presence = _Presence()


def register_presence(
    *, shows_online: Callable[[Any], bool], hidden_among: Callable[[Iterable[int]], set[int]]
) -> None:
    """shows_online(user): may others see this user online? hidden_among(ids): which of
    these users hide their online status."""
    presence.shows_online = shows_online
    presence.hidden_among = hidden_among
