"""Video chat settings with their defaults, read in one place.

The project-wide ones (STUN/TURN, translation, skip TTL) live in config/settings; the ones
below are video-chat internals that a deployment rarely changes, so they default here and a
settings module may override any of them by name.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # An SDP is a few KB; a bigger one is abuse or a bug, refused before relaying it.
    "VIDEOCHAT_MAX_SDP_BYTES": 10 * 1024,
    # Proxies (IPs or CIDR networks) whose X-Forwarded-For we believe. Nobody else's: a
    # client could otherwise pick any country it likes by sending the header itself.
    "VIDEOCHAT_TRUSTED_PROXIES": [],
    # Dotted path of `f(ip: str) -> str | None` giving an ISO-2 country for an IP address.
    "VIDEOCHAT_COUNTRY_RESOLVER": "videochat.geo.iptocc_country",
    # Timeout of one translation request; chat is delivered untranslated past it.
    "VIDEOCHAT_TRANSLATION_TIMEOUT_SECONDS": 2.0,
    # Reports: what a reporter may attach.
    "VIDEOCHAT_REPORT_MAX_CHAT_LINES": 50,
    "VIDEOCHAT_REPORT_MAX_LINE_CHARS": 500,
    "VIDEOCHAT_REPORT_MAX_FRAME_BYTES": 2 * 1024 * 1024,
    # Matchmaking forgets a waiting user or a pair whose deadline passes (a process that died
    # cannot clean up); a live socket renews them well within the shortest deadline (90 s).
    "VIDEOCHAT_HEARTBEAT_SECONDS": 30.0,
    # Reports a user may file per hour (each may carry an image).
    "VIDEOCHAT_REPORTS_PER_HOUR": 10,
    # The per-connection public card (name, country...) the partner is shown at a match.
    "VIDEOCHAT_CARD_TTL_SECONDS": 6 * 3600,
}


def get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
