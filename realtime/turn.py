"""ICE servers for a signed-in client's WebRTC calls: video chat hands them out in `ready`,
CallsApp at `voip/turnServer` (Matrix's shape). One relay serves both products, so its
settings keep the name of the first (VIDEOCHAT_*).

TURN relays media for peers that cannot reach each other directly, so it is worth abusing;
coturn's `use-auth-secret` mode lets us mint credentials that expire without coturn having
to know our users: username = "<expiry unix time>:<user id>", credential =
base64(HMAC-SHA1(shared secret, username)). coturn recomputes the HMAC and checks the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings


def turn_credential(*, user_id: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for VIDEOCHAT_TURN_TTL_SECONDS from `now`."""
    expiry = int(now if now is not None else time.time()) + settings.VIDEOCHAT_TURN_TTL_SECONDS
    username = f"{expiry}:{user_id}"
    digest = hmac.new(
        settings.VIDEOCHAT_TURN_SECRET.encode(), username.encode(), hashlib.sha1
    ).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(*, user_id: int | None, now: float | None = None) -> list[dict[str, object]]:
    """RTCIceServer dicts. TURN only for a signed-in user and only when a secret is set."""
    servers: list[dict[str, object]] = []
    if settings.VIDEOCHAT_STUN_URLS:
        servers.append({"urls": list(settings.VIDEOCHAT_STUN_URLS)})
    if user_id is not None and settings.VIDEOCHAT_TURN_URLS and settings.VIDEOCHAT_TURN_SECRET:
        username, credential = turn_credential(user_id=user_id, now=now)
        servers.append(
            {
                "urls": list(settings.VIDEOCHAT_TURN_URLS),
                "username": username,
                "credential": credential,
            }
        )
    return servers


def turn_server(*, user_id: int, now: float | None = None) -> dict[str, object]:
    """Matrix's `GET voip/turnServer` answer: every STUN and TURN URI, and the TURN
    credential when a secret is set (else none: STUN needs none)."""
    uris = list(settings.VIDEOCHAT_STUN_URLS)
    answer: dict[str, object] = {"uris": uris, "ttl": settings.VIDEOCHAT_TURN_TTL_SECONDS}
    if settings.VIDEOCHAT_TURN_URLS and settings.VIDEOCHAT_TURN_SECRET:
        username, credential = turn_credential(user_id=user_id, now=now)
        uris += list(settings.VIDEOCHAT_TURN_URLS)
        answer.update(username=username, password=credential)
    return answer
