"""Real-time events CallsApp emits. Durable items travel in the device stream (realtime.stream);
these are live hints only."""

from __future__ import annotations

from typing import Literal

from realtime.events import Event


class KeyCountsChanged(Event):
    """Someone claimed one of the device's one-time keys: its socket re-sends the counts
    (they also ride on the device's next sync frame). Handled as `messaging_counts`."""

    type: Literal["messaging.counts"] = "messaging.counts"
