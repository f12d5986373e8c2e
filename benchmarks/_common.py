"""Helpers the benchmark scripts share: a throwaway environment (SQLite file, Redis key
prefix), starting and stopping ASGI server processes of the real app, CPU accounting from
/proc, percentiles and plain-text tables."""

from __future__ import annotations

import atexit
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


@dataclass
class BenchEnv:
    """Environment for the app under test: its own SQLite file and Redis key prefix."""

    run_id: str
    db_path: Path | None
    env: dict[str, str]

    def apply(self) -> None:
        """Make this process's Django (fixtures, setup) use the same database and Redis."""
        os.environ.update(self.env)


def bench_env(database_url: str = "", redis_url: str = "") -> BenchEnv:
    run_id = uuid.uuid4().hex[:8]
    VAR.mkdir(exist_ok=True)
    db_path = None
    if not database_url:
        # Through the settings' own SQLite branch (WAL, immediate transactions, busy timeout):
        # two server processes write the connection log concurrently.
        db_path = VAR / f"bench-{run_id}.sqlite3"
    if not redis_url:
        redis_url = _own_redis()
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "false",  # DEBUG keeps every SQL query in memory
        "DJANGO_LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,  # empty: SQLite at DJANGO_SQLITE_PATH
        "DJANGO_SQLITE_PATH": str(db_path or ""),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"bench{run_id}:",
        "PYTHONUNBUFFERED": "1",
        # Every simulated client connects from this machine's one address: the per-address
        # connect limit would measure itself. Per-user limits stay as configured.
        "WS_CONNECT_IP_BURST": "1000000",
        "WS_CONNECT_IP_PER_SECOND": "1000000",
        # The clients say Origin http://127.0.0.1 while each server listens on a port of its
        # own: the (scheme, host, port) origin check refused every socket with a 403.
        "WS_ALLOWED_ORIGINS": "http://127.0.0.1",
    }
    return BenchEnv(run_id, db_path, env)


def migrate(bench: BenchEnv) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **bench.env},
        check=True,
    )


def _own_redis() -> str:
    """A Redis of this process's own (started once, stopped when the process exits), so
    that a benchmark never competes with test runs' keys or with another benchmark. Once per
    process, not per run: Django settings are read once, and a script that runs two modes
    (matchmaking.py) keeps the first one's REDIS_URL."""
    from config.embedded_redis import ensure_running, stop

    global _OWN_REDIS
    if _OWN_REDIS is None:
        name = f"bench-{os.getpid()}"
        _OWN_REDIS = ensure_running(name)

        def stop_it() -> None:
            stop(name)
            (VAR / f"redis-{name}.log").unlink(missing_ok=True)

        atexit.register(stop_it)
    return _OWN_REDIS


_OWN_REDIS: str | None = None


def cleanup(bench: BenchEnv) -> None:
    import redis

    r = redis.Redis.from_url(bench.env["REDIS_URL"])
    batch = list(r.scan_iter(match=bench.env["REDIS_KEY_PREFIX"] + "*", count=1000))
    for i in range(0, len(batch), 500):
        r.delete(*batch[i : i + 500])
    if bench.db_path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(bench.db_path) + suffix).unlink(missing_ok=True)


def sessions_with_devices(people: Sequence[object]) -> list[str]:
    """A login session and its device (what a browser's login leaves behind) for each user,
    bulk-written; returns the session keys (the cookies). Call after django.setup()."""
    import secrets
    import string

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from accounts.models import Device
    from accounts.selectors import DEVICE_SESSION_KEY

    now = timezone.now()
    store = SessionStore()
    keys = [store._get_new_session_key() for _ in people]  # type: ignore[attr-defined]
    Device.objects.bulk_create(
        [
            Device(
                user=u,
                device_id="".join(secrets.choice(string.ascii_uppercase) for _ in range(10)),
                session_key=key,
                make="Bench",
                platform="Linux",
                last_seen_at=now,
            )
            for u, key in zip(people, keys, strict=True)
        ],
        batch_size=500,
    )
    device_pk = dict(Device.objects.filter(session_key__in=keys).values_list("session_key", "pk"))
    sessions = []
    for u, key in zip(people, keys, strict=True):
        data = {
            SESSION_KEY: str(u.pk),  # type: ignore[attr-defined]
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: u.get_session_auth_hash(),  # type: ignore[attr-defined]
            DEVICE_SESSION_KEY: device_pk[key],
        }
        sessions.append(
            Session(
                session_key=key,
                session_data=store.encode(data),
                expire_date=now + dt.timedelta(days=1),
            )
        )
    Session.objects.bulk_create(sessions, batch_size=500)
    return keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def server_command(kind: str, port: int, host: str = "127.0.0.1") -> list[str]:
    app = "config.asgi:application"
    if kind == "daphne":
        # -v 0: no access log line per socket.
        return [sys.executable, "-m", "daphne", "-v", "0", "-b", host, "-p", str(port), app]
    if kind == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            host,
            "--port",
            str(port),
            "--ws",
            "realtime.wsprotocol:LeanWebSocketProtocol",
            "--ws-per-message-deflate",
            "false",
            "--log-level",
            "warning",
            "--no-access-log",
            app,
        ]
    raise ValueError(f"unknown server {kind}")


def start_server(
    kind: str,
    env: dict[str, str],
    *,
    cmd: list[str] | None = None,
    host: str = "127.0.0.1",
    wrap: Sequence[str] = (),
) -> Server:
    """`wrap` runs the server through another command (`ip netns exec NAME`): then `host` is
    its address there, and the port is one free here (a fresh namespace has all free)."""
    port = free_port()
    log = open(VAR / f"bench-server-{port}.log", "wb")  # noqa: SIM115
    argv = server_command(kind, port, host) if cmd is None else [*cmd, str(port)]
    argv = [*wrap, *argv]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if kind == "bare":
                with socket.create_connection((host, port), timeout=1):
                    break
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=2) as resp:
                if resp.status < 500:
                    break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log_name = f"var/bench-server-{port}.log"
                raise RuntimeError(f"{kind} did not start; see {log_name}") from None
            time.sleep(0.1)
    return Server(kind, port, proc, host)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return float("nan")
    i = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[i]


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [title, line]
    for n, row in enumerate(cells):
        out.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
