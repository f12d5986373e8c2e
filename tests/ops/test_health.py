"""Liveness and readiness: a load balancer's view of one process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from tests.ops.helpers import PrivateRedis


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.django_db
def test_liveness_and_readiness_in_process() -> None:
    client = Client()
    live = client.get("/health/live/")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert "no-cache" in live["Cache-Control"]
    ready = client.get("/health/ready/")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "broker": "ok",
        "disk": "ok",
    }


@pytest.mark.django_db
def test_readiness_fails_on_a_full_disk(settings) -> None:  # type: ignore[no-untyped-def]
    settings.HEALTH_DISK_MAX_PERCENT = 1.0  # any disk in use is "full"
    ready = Client().get("/health/ready/")
    assert ready.status_code == 503
    assert ready.json()["checks"]["disk"] != "ok"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_readiness_fails_when_redis_stops_and_recovers(private_redis, asgi_servers) -> None:  # type: ignore[no-untyped-def]
    env = {"REDIS_URL": private_redis.url, "CELERY_BROKER_URL": private_redis.url}
    server = asgi_servers(env, server="uvicorn")
    assert get(f"{server.url}/health/ready/")[0] == 200

    private_redis.stop()
    status, body = get(f"{server.url}/health/ready/")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"] != "ok" and body["checks"]["broker"] != "ok"
    assert body["checks"]["database"] == "ok"
    # Liveness does not depend on Redis: restarting the process would not help.
    assert get(f"{server.url}/health/live/")[0] == 200

    private_redis.start()  # same port, as a restarted Redis would be
    status, body = get(f"{server.url}/health/ready/")
    assert status == 200, body
    assert set(body["checks"].values()) == {"ok"}
