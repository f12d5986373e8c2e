"""The spec's error codes as ServiceErrors: views answer `{"errcode", "error"}` with the
status (docs/protocols/callsapp.md, "Authentication and errors")."""

from __future__ import annotations

from django.conf import settings

from realtime.errors import ServiceError


def not_found(detail: str) -> ServiceError:
    return ServiceError("M_NOT_FOUND", detail, status=404)


def forbidden(detail: str) -> ServiceError:
    return ServiceError("M_FORBIDDEN", detail, status=403)


def under_age() -> ServiceError:
    """CallsApp's age rule (settings.AGE_RULES): the API and the socket refuse the account."""
    return forbidden(f"CallsApp is for ages {settings.AGE_RULES['messaging']} and up")


def invalid(detail: str) -> ServiceError:
    return ServiceError("M_INVALID_PARAM", detail, status=400)


def too_large(detail: str) -> ServiceError:
    return ServiceError("M_TOO_LARGE", detail, status=413)


def quota(detail: str) -> ServiceError:
    return ServiceError("M_RESOURCE_LIMIT_EXCEEDED", detail, status=403)


def rate_limited(detail: str, retry_after_ms: int) -> ServiceError:
    err = ServiceError("M_LIMIT_EXCEEDED", detail, status=429)
    err.retry_after_ms = retry_after_ms  # type: ignore[attr-defined]
    return err


def invalid_signature(detail: str) -> ServiceError:
    return ServiceError("M_INVALID_SIGNATURE", detail, status=400)


def unauthorized(detail: str) -> ServiceError:
    return ServiceError("M_UNKNOWN_TOKEN", detail, status=401)


def conflict(detail: str) -> ServiceError:
    return ServiceError("M_CONFLICT", detail, status=409)
