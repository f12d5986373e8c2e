"""Connection data: the client's IP address and the country GeoIP gives for it.

The IP is used for the lookup and dropped; only the ISO-2 country stays in the socket's
memory for matching and for the partner's flag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string
from iptocc import country_code

from accounts.countries import COUNTRY_NAMES
from accounts.countries import flag as flag_emoji


@dataclass(frozen=True)
class Country:
    """A country as shown to users; `str()` is the ISO code ("" when unknown)."""

    code: str
    name: str
    flag: str

    def __str__(self) -> str:
        return self.code


@lru_cache(maxsize=512)
def country_info(code: str | None) -> Country:
    # Cached (a few hundred codes, an immutable answer): every match shows two of them, and
    # building one was 2 % of a server's samples at 1,000 arrivals/s (benchmarks/matchmaking.py).
    code = (code or "").upper()
    return Country(code=code, name=COUNTRY_NAMES.get(code, code), flag=flag_emoji(code))


def iptocc_country(ip: str) -> str | None:
    """The default resolver: the offline iptocc database; private and loopback give None."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if not parsed.is_global:
        return None
    return country_code(str(parsed))


@lru_cache(maxsize=8)
def _resolver(path: str) -> Callable[[str], str | None]:
    return import_string(path)


def country_of_ip(ip: str | None) -> str:
    if not ip:
        return ""
    return (_resolver(settings.VIDEOCHAT_COUNTRY_RESOLVER)(ip) or "").upper()


def _trusted(ip: str, proxies: Iterable[str]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for proxy in proxies:
        try:
            if addr in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy, in which case the
    right-most X-Forwarded-For entry that is not itself a trusted proxy (entries to its left
    were written by the client and prove nothing)."""
    if not peer:
        return None
    proxies = settings.VIDEOCHAT_TRUSTED_PROXIES
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def scope_client_ip(scope: dict) -> str | None:
    """`client_ip` for an ASGI scope (a WebSocket connection)."""
    client = scope.get("client") or (None, None)
    headers = dict(scope.get("headers") or [])
    xff = headers.get(b"x-forwarded-for")
    return client_ip(client[0], xff.decode("latin-1") if xff else None)


def request_client_ip(request) -> str | None:  # type: ignore[no-untyped-def]
    """`client_ip` for an HTTP request."""
    return client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))
