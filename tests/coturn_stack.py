"""Debian's coturn with deploy/coturn/turnserver.conf as it stands, started on loopback for
a test: the template's ${...} rendered, TLS left out (no certificate here), and the only
test-only change a loopback call needs: the loopback peer allowed. The production file keeps
denying private and loopback peers (tests/ops/test_coturn_config.py)."""

from __future__ import annotations

import shutil
import socket
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
TEMPLATE = ROOT / "deploy" / "coturn" / "turnserver.conf"

# Lines of the production file a loopback test cannot use as they are.
_DROPPED = (
    "no-loopback-peers",
    "cert=",
    "pkey=",
    "tls-listening-port=",
    "log-file=",
    "listening-port=",
    "min-port=",
    "max-port=",
    "external-ip=",
)
TEST_ONLY = """
# --- test-only: loopback, and the loopback peer allowed (overrides denied-peer-ip)
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port={port}
min-port={min_port}
max-port={max_port}
allow-loopback-peers
allowed-peer-ip=127.0.0.1
no-tls
no-dtls
pidfile={dir}/turnserver.pid
userdb={dir}/turndb
log-file={dir}/turn.log
"""


@dataclass
class TurnServer:
    port: int
    secret: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def stop(self) -> None:
        stop_process(self.process)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(*, secret: str, port: int, workdir: Path, relay_ports: tuple[int, int]) -> str:
    text = string.Template(TEMPLATE.read_text()).safe_substitute(
        TURN_SECRET=secret, TURN_REALM="comms.test", TURN_EXTERNAL_IP="127.0.0.1"
    )
    kept = [line for line in text.splitlines() if not line.strip().startswith(_DROPPED)]
    return "\n".join(kept) + TEST_ONLY.format(
        port=port, dir=workdir, min_port=relay_ports[0], max_port=relay_ports[1]
    )


def start_turnserver(workdir: Path, secret: str) -> TurnServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    base = 20000 + (port % 20000)  # a relay range of our own, away from the others
    conf = workdir / "turnserver.conf"
    conf.write_text(
        render(secret=secret, port=port, workdir=workdir, relay_ports=(base, base + 99))
    )
    proc = subprocess.Popen(
        [TURNSERVER, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "stderr.log", "wb"),  # noqa: SIM115
    )
    server = TurnServer(port=port, secret=secret, process=proc, workdir=workdir)
    log = workdir / "turn.log"
    deadline = time.monotonic() + 15
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "listener opened on" in text or "Total General servers" in text:
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"turnserver did not start:\n{text[-2000:]}")
        time.sleep(0.05)  # startup poll: nothing to wait on but its log
