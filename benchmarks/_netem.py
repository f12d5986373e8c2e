"""An impaired network of its own for a benchmark: a Linux network namespace joined to this
one by a point-to-point link whose both directions delay and drop packets like
`tc qdisc ... netem delay 30ms 15ms loss 2%`. Needs root and iproute2's `ip` (and `tc`).

Where the kernel has the netem qdisc, the link is a veth pair with netem on each end. Where
it has not (some VM kernels are built without sch_netem: `tc` answers "Specified qdisc kind
is unknown"), the link is a pair of TUN devices and a relay process applies the same model
to every IP packet: netem's default jitter (uniform within +-jitter), independent loss, and
the reordering that jitter causes (packets leave by due time, as in netem's time-ordered
queue). Either way TCP above it sees real delay, loss, retransmission and reordering.

Everything made here (namespace, links, relay process) is removed on leaving `impaired()`,
error or not.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000


@dataclass
class Impairment:
    delay_ms: float = 30.0
    jitter_ms: float = 15.0
    loss_pct: float = 2.0

    def netem_args(self) -> list[str]:
        return [
            "delay",
            f"{self.delay_ms:g}ms",
            f"{self.jitter_ms:g}ms",
            "loss",
            f"{self.loss_pct:g}%",
        ]

    def __str__(self) -> str:
        return f"delay {self.delay_ms:g} ms +- {self.jitter_ms:g} ms, loss {self.loss_pct:g} %"


@dataclass
class Namespace:
    """The namespace and how to reach it: run a process in it with `prefix + argv`."""

    name: str
    host_ip: str  # this side's address on the link
    ns_ip: str  # the namespace's address (a server binds here)
    method: str  # "netem qdisc" or "tun relay"
    prefix: list[str] = field(default_factory=list)
    # What the relay did (packets, drops, delay achieved), once it has stopped; stays None
    # with the kernel's netem.
    relay_stats: dict[str, float] | None = None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def preflight() -> str | None:
    """Why an impaired namespace cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (ip netns add, links, qdiscs)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


def _kernel_has_netem() -> bool:
    if shutil.which("tc") is None:
        return False
    probe = f"nq{uuid.uuid4().hex[:6]}"
    if _ip(
        "link", "add", probe, "type", "veth", "peer", "name", probe + "p", check=False
    ).returncode:
        return False
    try:
        cmd = ["tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    finally:
        _ip("link", "del", probe, check=False)


@contextlib.contextmanager
def impaired(imp: Impairment, *, var: Path, force_relay: bool = False) -> Iterator[Namespace]:
    """A namespace behind an impaired link, removed on exit (error or not)."""
    why = preflight()
    if why:
        raise RuntimeError(f"--netem {why}")
    tag = uuid.uuid4().hex[:6]
    name = f"ptt-{tag}"
    # A /30 of 10.213.x.0/24 per run, so that concurrent runs never share addresses.
    octet = int(tag[:2], 16)
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    host_if, ns_if = f"pl{tag}", f"pn{tag}"
    relay: subprocess.Popen[bytes] | None = None
    stats_path: Path | None = None
    use_netem = not force_relay and _kernel_has_netem()
    ns = Namespace(
        name,
        host_ip,
        ns_ip,
        "netem qdisc" if use_netem else "tun relay",
        prefix=["ip", "netns", "exec", name],
    )
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        if use_netem:
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", name)
            _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", name, "link", "set", ns_if, "up")
            netem = imp.netem_args()
            subprocess.run(
                ["tc", "qdisc", "add", "dev", host_if, "root", "netem", *netem], check=True
            )
            subprocess.run(
                [*ns.prefix, "tc", "qdisc", "add", "dev", ns_if, "root", "netem", *netem],
                check=True,
            )
        else:
            _ip("tuntap", "add", "dev", host_if, "mode", "tun")
            _ip("-n", name, "tuntap", "add", "dev", ns_if, "mode", "tun")
            _ip("addr", "add", host_ip, "peer", ns_ip, "dev", host_if)
            _ip("-n", name, "addr", "add", ns_ip, "peer", host_ip, "dev", ns_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", name, "link", "set", ns_if, "up")
            stats_path = var / f"netem-{tag}.json"
            relay = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "relay",
                    name,
                    host_if,
                    ns_if,
                    json.dumps(imp.__dict__),
                    str(stats_path),
                ],
                stdout=subprocess.PIPE,
            )
            assert relay.stdout is not None
            if relay.stdout.readline().strip() != b"ready":
                raise RuntimeError("the impairment relay did not start")
        yield ns
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=5)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        if stats_path is not None and stats_path.exists():
            ns.relay_stats = json.loads(stats_path.read_text())
            stats_path.unlink()
        _ip("netns", "del", name, check=False)  # takes the namespace's end of the link
        _ip("link", "del", host_if, check=False)


# --- the relay (a process of its own: `python benchmarks/_netem.py relay ...`) -----------


def _open_tun(ifname: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/var/run/netns/{name}") as f:
        if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")


def relay(ns_name: str, host_if: str, ns_if: str, imp: Impairment, stats_path: Path) -> None:
    """Forward IP packets between the two TUN ends, each one delayed by delay +- jitter
    (uniform, as netem without a distribution table) and dropped with probability loss."""
    host_fd = _open_tun(host_if)
    _enter_netns(ns_name)
    ns_fd = _open_tun(ns_if)
    peer = {host_fd: ns_fd, ns_fd: host_fd}
    rnd = random.Random()
    queue: list[tuple[float, int, int, bytes]] = []
    n = 0
    stats = {"packets": 0, "dropped": 0, "late_ms_max": 0.0, "late_ms_sum": 0.0, "sent": 0}
    delays: list[float] = []
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    poller = select.poll()
    for fd in peer:
        poller.register(fd, select.POLLIN)
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            due, _, out, pkt = heapq.heappop(queue)
            with contextlib.suppress(BlockingIOError):
                os.write(out, pkt)
            late = (now - due) * 1000
            stats["sent"] += 1
            stats["late_ms_sum"] += late
            stats["late_ms_max"] = max(stats["late_ms_max"], late)
        timeout = 200.0 if not queue else max(0.0, (queue[0][0] - time.monotonic()) * 1000)
        try:
            ready = poller.poll(timeout)
        except InterruptedError:
            continue
        for fd, _ev in ready:
            while True:
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                stats["packets"] += 1
                if rnd.random() * 100 < imp.loss_pct:
                    stats["dropped"] += 1
                    continue
                d = imp.delay_ms + rnd.uniform(-imp.jitter_ms, imp.jitter_ms)
                delays.append(d)
                n += 1
                heapq.heappush(queue, (time.monotonic() + d / 1000, n, peer[fd], pkt))
    delays.sort()
    stats["delay_ms_p50"] = delays[len(delays) // 2] if delays else 0.0
    stats["late_ms_mean"] = stats["late_ms_sum"] / stats["sent"] if stats["sent"] else 0.0
    stats_path.write_text(json.dumps(stats))


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "relay":
    relay(
        sys.argv[2],
        sys.argv[3],
        sys.argv[4],
        Impairment(**json.loads(sys.argv[5])),
        Path(sys.argv[6]),
    )
