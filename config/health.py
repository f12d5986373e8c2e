"""Liveness and readiness for a load balancer (django-health-check).

Liveness answers "is this process serving requests?" and touches nothing else: restarting a
process because Redis is down would not bring Redis back. Readiness answers "should traffic
come here?": the database, Redis, the Celery broker and room on the media disk. A process
that has lost Redis reports not-ready (503) and recovers by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET
from health_check.base import HealthCheck, HealthCheckResult
from health_check.checks import Database
from health_check.contrib.psutil import Disk
from health_check.contrib.redis import Redis
from health_check.exceptions import ServiceUnavailable

from config.celery_app import app

PROBE_TIMEOUT_SECONDS = 2.0


def _redis_client() -> aioredis.Redis:
    # A fresh client per probe: the shared pool would report a connection it still holds.
    return aioredis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
    )


@dataclasses.dataclass
class CeleryBroker(HealthCheck):
    """The broker accepts a connection (tasks can be queued); workers are not required."""

    timeout = datetime.timedelta(seconds=PROBE_TIMEOUT_SECONDS)

    def run(self) -> None:
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)
        except Exception as exc:  # kombu raises transport-specific errors
            raise ServiceUnavailable("Celery broker unreachable") from exc


@dataclasses.dataclass
class MediaDisk(Disk):
    """Room on the disk that holds uploads. MEDIA_ROOT may not exist before the first upload;
    the disk it will be on is the one measured."""

    def run(self) -> None:
        path = Path(str(getattr(self, "path", "")))
        while not path.exists() and path != path.parent:
            path = path.parent
        self.path = path  # type: ignore[has-type]
        super().run()


def readiness_checks() -> list[HealthCheck]:
    return [
        Database(),
        Redis(client_factory=_redis_client),
        CeleryBroker(),
        MediaDisk(
            path=settings.MEDIA_ROOT, max_disk_usage_percent=settings.HEALTH_DISK_MAX_PERCENT
        ),
    ]


def _label(result: HealthCheckResult) -> str:
    return _NAMES.get(type(result.check).__name__, type(result.check).__name__.lower())


_NAMES = {"CeleryBroker": "broker", "MediaDisk": "disk"}


@require_GET
async def live(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"status": "ok"})
    add_never_cache_headers(response)
    return response


@require_GET
async def ready(request: HttpRequest) -> JsonResponse:
    results = await asyncio.gather(*(check.get_result() for check in readiness_checks()))
    checks: dict[str, Any] = {_label(r): "ok" if r.error is None else str(r.error) for r in results}
    failing = any(r.error is not None for r in results)
    response = JsonResponse(
        {"status": "unavailable" if failing else "ok", "checks": checks},
        status=503 if failing else 200,
    )
    add_never_cache_headers(response)
    return response
