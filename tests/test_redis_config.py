"""The production Redis configuration (deploy/redis/redis.conf) loads, and when memory is
full it refuses writes instead of evicting anything: a durable key (a Celery queue, a
channel-layer group) survives, an audio packet write is the one that fails."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port

CONF = Path(__file__).resolve().parents[1] / "deploy" / "redis" / "redis.conf"


@pytest.fixture
def production_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (apt-get install redis-server)"
    port = free_port()
    # The shipped file, with a small maxmemory so the test fills it quickly.
    proc = subprocess.Popen(
        [
            server,
            str(CONF),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--maxmemory",
            "3mb",
            "--logfile",
            "",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait for the server's own "ready" line
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server refused the configuration")
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_full_redis_refuses_writes_and_evicts_nothing(production_redis: redis.Redis) -> None:
    r = production_redis
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    r.rpush("celery", *[f"task-{i}" for i in range(100)])  # a durable queue (no TTL)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(10_000):  # audio kept for replay, with its TTL
            r.rpush(f"voice:tx:{i}:audio", b"a" * 4096)
            r.expire(f"voice:tx:{i}:audio", 30)
    assert r.llen("celery") == 100
    assert r.info("stats")["evicted_keys"] == 0
