"""Every Redis key accounts/ uses, in one place (built on realtime.keys.key, so the run's
prefix applies)."""

from __future__ import annotations

from realtime.keys import key


def contact_rate_key(who: str) -> str:
    """Token bucket of contact-form messages of one sender ("email:<address>" or
    "ip:<address>")."""
    return key("contact", who)


def deletion_request_rate_key(client_ip: str | None) -> str:
    """Token bucket of deletion requests (by email, logged out) from one network address."""
    return key("deletion_request", client_ip or "-")
