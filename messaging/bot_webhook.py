"""A bot's webhook: where its URL may point, and the one HTTP call that delivers an update.

SSRF: the server makes this request on a stranger's behalf, so the URL must be https and
its host must resolve to public addresses only (no loopback, private, link-local, shared,
multicast or reserved range: not the host's own network, not a cloud metadata address).
The name is resolved again at each delivery, since DNS may change after setWebhook; what
remains between that check and the connection (a rebinding within the lookup's lifetime)
is left to the network's egress rules. Redirects are not followed. Development only:
MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE (local settings) allows http and private addresses, for
a bot on one's own machine.

Tests mount a transport adapter on `http` (no network)."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction

from realtime.jobs import enqueue

from .errors import invalid

log = logging.getLogger(__name__)

# The HTTP client every delivery goes through.
http = requests.Session()
TIMEOUT = (3, 10)  # connect, read: a slow bot must not hold a worker
SECRET_HEADER = "X-CallsApp-Bot-Api-Secret-Token"  # noqa: S105 - a header name
TASK = "messaging.tasks.bot_webhook_deliver"
MAX_RETRIES = 8  # 5 s doubling: about 21 minutes in all, then the update waits


def backoff_seconds(retries: int) -> int:
    return int(5 * 2**retries)


def _refused(detail: str) -> Exception:
    return invalid(f"Bad Request: bad webhook: {detail}")


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_check(url: str) -> None:
    """Raises a 400 ServiceError unless `url` may receive webhooks."""
    parts = urlsplit(url)
    allow_private = settings.MESSAGING_BOT_WEBHOOK_ALLOW_PRIVATE
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise _refused("the URL must be https")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise _refused("the URL's port is not a number") from None
    if not host or parts.username or parts.password:
        raise _refused("the URL needs a host (and no user name or password)")
    if allow_private:
        return
    try:
        found = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise _refused(f"{host} does not resolve") from None
    if not found or not all(_public(str(info[4][0])) for info in found):
        raise _refused(f"{host} must resolve to public addresses only")


def schedule_on_commit(bot_id: int) -> None:
    transaction.on_commit(lambda: enqueue(TASK, bot_id))


def post_update(url: str, secret: str, update: dict[str, Any]) -> bool:
    """POST one update; True when the bot's server took it (2xx)."""
    try:
        url_check(url)
    except Exception as exc:  # the name resolves elsewhere now
        log.warning("bot webhook refused at delivery: %s", exc)
        return False
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SECRET_HEADER] = secret
    try:
        resp = http.post(
            url,
            data=json.dumps(update),
            headers=headers,
            timeout=TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        log.info("bot webhook failed: %r", exc)
        return False
    if not 200 <= resp.status_code < 300:
        log.info("bot webhook answered %s", resp.status_code)
        return False
    return True
