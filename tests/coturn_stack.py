"""Debian's coturn with deploy/coturn/turnserver.conf as it stands, started on loopback for
a test: the template's ${...} rendered, TLS left out (no certificate here), and the only
test-only change a loopback call needs: the loopback peer allowed. The production file keeps
denying private and loopback peers (tests/ops/test_coturn_config.py)."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
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


ALLOCATE = 0x0003
ALLOCATE_ERROR = 0x0113
MAGIC_COOKIE = 0x2112A442
REQUESTED_TRANSPORT_UDP = (0x0019, bytes([17, 0, 0, 0]))
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, REALM, NONCE = 0x0006, 0x0008, 0x0009, 0x0014, 0x0015


def _stun(kind: int, transaction: bytes, attrs: list[tuple[int, bytes]], key: bytes = b"") -> bytes:
    body = b"".join(
        t.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v + b"\0" * (-len(v) % 4)
        for t, v in attrs
    )
    head = kind.to_bytes(2, "big") + MAGIC_COOKIE.to_bytes(4, "big") + transaction
    if not key:
        return head[:2] + len(body).to_bytes(2, "big") + head[2:] + body
    # MESSAGE-INTEGRITY's HMAC covers the header with the length that includes it (RFC 5389 15.4).
    covered = head[:2] + (len(body) + 24).to_bytes(2, "big") + head[2:] + body
    mac = hmac.new(key, covered, hashlib.sha1).digest()
    return covered + MESSAGE_INTEGRITY.to_bytes(2, "big") + (20).to_bytes(2, "big") + mac


def _attrs(message: bytes) -> dict[int, bytes]:
    found, at = {}, 20
    while at + 4 <= len(message):
        kind, size = (
            int.from_bytes(message[at : at + 2], "big"),
            int.from_bytes(message[at + 2 : at + 4], "big"),
        )
        found[kind] = message[at + 4 : at + 4 + size]
        at += 4 + size + (-size % 4)
    return found


def refuses_expired_allocate(port: int, timeout: float) -> bool:
    """The exchange a browser's expired credential makes (RFC 5766 6.2): an Allocate without
    credentials gets 401 with a realm and a nonce; the same Allocate signed as a long-expired
    user gets 401 again, from coturn's authentication thread. True when both answers came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        try:
            s.send(_stun(ALLOCATE, os.urandom(12), [REQUESTED_TRANSPORT_UDP]))
            challenge = _attrs(s.recv(2048))
            realm, nonce, username = challenge[REALM], challenge[NONCE], b"1:probe"
            key = hashlib.md5(username + b":" + realm + b":x").digest()  # noqa: S324 (the spec's)
            attrs = [REQUESTED_TRANSPORT_UDP, (USERNAME, username), (REALM, realm), (NONCE, nonce)]
            transaction = os.urandom(12)
            s.send(_stun(ALLOCATE, transaction, attrs, key))
            reply = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError, KeyError):  # refused: not bound yet
            return False
    code = _attrs(reply).get(ERROR_CODE, b"\0\0\0\0")
    return (
        int.from_bytes(reply[:2], "big") == ALLOCATE_ERROR
        and reply[8:20] == transaction
        and code[2] * 100 + code[3] == 401
    )


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

    def log_tail(self, size: int = 3000) -> str:
        log = self.workdir / "turn.log"
        return log.read_text(errors="replace")[-size:] if log.exists() else "(no log)"


def free_port() -> int:
    """A port free on 127.0.0.1 for UDP and TCP both (coturn listens on both), below the
    system's range of ephemeral ports: a port picked inside it can be taken by any outgoing
    connection before coturn binds it (CI saw coturn retry "errno=98" on its TCP listener
    for good)."""
    low = _ephemeral_low()
    while True:
        port = random.randrange(10_000, min(20_000, low))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def render(*, secret: str, port: int, workdir: Path, relay_ports: tuple[int, int]) -> str:
    text = string.Template(TEMPLATE.read_text()).safe_substitute(
        TURN_SECRET=secret, TURN_REALM="comms.test", TURN_EXTERNAL_IP="127.0.0.1"
    )
    kept = [line for line in text.splitlines() if not line.strip().startswith(_DROPPED)]
    return "\n".join(kept) + TEST_ONLY.format(
        port=port, dir=workdir, min_port=relay_ports[0], max_port=relay_ports[1]
    )


def start_turnserver(workdir: Path, secret: str, attempts: int = 3) -> TurnServer:
    """A coturn of the test's own, ready; a start that does not come up (its port taken
    meanwhile) is stopped and made again on another port."""
    for attempt in range(1, attempts + 1):
        server = _start_once(workdir / str(attempt), secret)
        if server is not None:
            return server
    raise RuntimeError(f"turnserver did not start in {attempts} attempts")


def _start_once(workdir: Path, secret: str) -> TurnServer | None:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # A relay range of our own, away from the others and below the ephemeral ports.
    base = 20_000 + (port % 120) * 100
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
    # Ready means coturn answers a signed request: it logs its servers before its listener and
    # authentication threads run, and a browser whose Allocate goes unanswered reports error
    # 701 where the expired-credential test expects 401 (seen once in CI).
    deadline = time.monotonic() + 15
    while not refuses_expired_allocate(port, timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"turnserver did not start on port {port}:\n{server.log_tail()}")
            server.stop()
            return None
        time.sleep(0.05)  # startup poll: nothing to wait on but its port
    return server
