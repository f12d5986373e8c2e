"""`make run`: daphne, a Celery worker and Celery beat on the embedded (or configured) Redis,
in one terminal; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from config import embedded_redis

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from django.conf import settings

    # Without REDIS_URL: the embedded Redis, started here and stopped when this stops.
    redis_name = embedded_redis.name_of(settings.REDIS_URL)
    if redis_name is not None:
        embedded_redis.ensure_running(redis_name)

    py = sys.executable
    commands = {
        "web": [py, "-m", "daphne", "-b", HOST, "-p", PORT, "config.asgi:application"],
        "worker": [py, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-c", "2"],
        "beat": [
            py,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-l",
            "warning",
            "-s",
            str(settings.BASE_DIR / "var" / "celerybeat-schedule"),
        ],
    }
    procs = {name: subprocess.Popen(cmd) for name, cmd in commands.items()}  # noqa: S603
    print(f"\n  Open http://{HOST}:{PORT}/   (Redis: {settings.REDIS_URL}; Ctrl-C stops)\n")

    def stop(*_: object) -> None:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    finally:
        stop()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_name is not None:
            embedded_redis.stop(redis_name)
    failed = [n for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
