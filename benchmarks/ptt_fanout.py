"""PTT audio fan-out through the real app (`config.asgi:application`, /ws/cbline/).

Starts ASGI processes (daphne and/or uvicorn; one each by default, as many as the bare
relay) on a throwaway SQLite file and Redis key prefix, and drives them with real WebSocket
clients (the `websockets` library, many sockets per client process, several client
processes) speaking docs/protocols/cbline.md: listeners join a channel, a talker takes the
floor and sends 40 ms packets of 120 bytes whose header's capture-time field carries the
send time (`time.time()*1000`); each listener computes receive - stamp on the same clock.
Every talker of a step presses at the same instant; the time to each grant is reported on
its own (grant p50/p99), and all talk together from `--press-seconds` later, each at its own
phase within the first packet, so the audio latency is that of steady talk.

Scenarios (see benchmarks/README.md):
  a  one talker, N listeners in one channel, split over the two server processes
  b  200 channels x 5 members, every channel's talker talking at once
  c  saturation: more talking channels per step until delivery < 100 % or p99 > 50 ms,
     then bisection to the knee, each step run --sat-repeats times, for our server at 1
     and 2 processes and for a bare `websockets` relay written below (same framing, one
     process); server CPU microseconds per delivery and CPU per process group

    .venv/bin/python benchmarks/ptt_fanout.py --quick
    .venv/bin/python benchmarks/ptt_fanout.py --scenarios a,b,c --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    ROOT,
    VAR,
    BenchEnv,
    Server,
    bench_env,
    cleanup,
    cpu_seconds,
    migrate,
    percentile,
    sessions_with_devices,
    start_server,
    stop_server,
    table,
)

HEADER = struct.Struct(">BBHId")  # kind, flags, seq, tx_id, capture time (ms)
# Two 20 ms Opus frames of 50 bytes, each with its u16 length: 104 + 16 = 120 bytes.
PAYLOAD = b"".join(len(f).to_bytes(2, "big") + f for f in (bytes(range(50)), bytes(range(50))))
P99_LIMIT_MS = 50.0
DRAIN_SECONDS = 3.0
# Listener sockets on the lean client below (default) or on the `websockets` client.
LEAN = os.environ.get("PTT_BENCH_LISTENER_CLIENT", "lean") == "lean"


# ============================================================== client process
@dataclass(eq=False)
class Sock:
    url: str
    cookie: str
    channel: int
    talker: bool
    ws: Any = None
    expect: tuple[str, ...] = ()
    waiter: asyncio.Future[dict[str, Any]] | None = None


@dataclass
class ClientState:
    received: int = 0
    lat: array = field(default_factory=lambda: array("d"))
    counting: bool = False


class LeanListener(asyncio.Protocol):
    """A listening-only RFC 6455 client: handshake, one masked text frame (the join), then
    it parses the server's unmasked frames straight from the transport's bytes. A listener
    on the `websockets` client costs several times more CPU per frame, and on a 2-core
    machine the clients share with the servers that would measure the clients."""

    def __init__(self, sock: Sock, state: ClientState, host: str, origin: str) -> None:
        self.sock, self.state, self.host, self.origin = sock, state, host, origin
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.joined: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        path = self.sock.url.split("/", 3)[3]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET /{path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {self.origin}\r\nCookie: sessionid={self.sock.cookie}\r\n\r\n".encode()
        )

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        )
        stream = (mask * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
        assert self.transport is not None
        self.transport.write(head + mask + body)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail("handshake:" + buf[:12].decode(errors="replace"))
                return
            del buf[: end + 4]
            self.upgraded = True
            join = {"type": "channel.join", "channel_id": self.sock.channel, "password": None}
            self.send_frame(1, json.dumps(join).encode())
        state, unpack, now = self.state, HEADER.unpack_from, time.time
        pos, size = 0, len(buf)
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if size < start + n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 2:
                if state.counting:
                    state.received += 1
                    state.lat.append(now() * 1000 - unpack(buf, start)[4])
            elif opcode == 1:
                if not self.joined.done():
                    msg = json.loads(bytes(buf[start : start + n]))
                    if msg["type"] in ("channel.joined", "error"):
                        self.joined.set_result(msg)
            elif opcode == 9:
                self.send_frame(10, bytes(buf[start : start + n]))
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
            pos = start + n
        del buf[:pos]

    def fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("closed")
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send_frame(8, (1000).to_bytes(2, "big"))
            self.transport.close()
        await self.closed


async def client_main() -> None:
    """A load client: commands as JSON lines on stdin, answers as JSON lines on stdout."""
    import websockets

    state = ClientState()
    socks: list[Sock] = []
    readers: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 26)  # a connect command lists every socket
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    async def read(sock: Sock) -> None:
        unpack, now = HEADER.unpack_from, time.time
        with contextlib.suppress(websockets.ConnectionClosed):
            async for msg in sock.ws:
                if type(msg) is bytes:
                    if state.counting:
                        state.received += 1
                        state.lat.append(now() * 1000 - unpack(msg)[4])
                elif sock.waiter is not None and not sock.waiter.done():
                    data = json.loads(msg)
                    if data["type"] in sock.expect or data["type"] == "error":
                        sock.waiter.set_result(data)

    async def request(sock: Sock, payload: dict[str, Any], *expect: str) -> dict[str, Any]:
        sock.waiter = loop.create_future()
        sock.expect = expect
        await sock.ws.send(json.dumps(payload))
        return await asyncio.wait_for(sock.waiter, 60)

    async def connect(sock: Sock, gate: asyncio.Semaphore, origin: str) -> str | None:
        async with gate:
            if not sock.talker and LEAN:
                return await connect_lean(sock, origin)
            try:
                sock.ws = await websockets.connect(
                    sock.url,
                    additional_headers={"Cookie": f"sessionid={sock.cookie}"},
                    origin=origin,  # type: ignore[arg-type]
                    compression=None,
                    open_timeout=120,
                    ping_interval=None,
                    max_queue=None,
                )
                readers.append(loop.create_task(read(sock)))
                joined = await request(
                    sock,
                    {"type": "channel.join", "channel_id": sock.channel, "password": None},
                    "channel.joined",
                )
            except Exception as exc:
                return type(exc).__name__
            if joined["type"] != "channel.joined":
                return f"join:{joined.get('code')}"
            return None

    async def connect_lean(sock: Sock, origin: str) -> str | None:
        host, port = sock.url.split("/")[2].split(":")
        try:
            _, proto = await loop.create_connection(
                lambda: LeanListener(sock, state, f"{host}:{port}", origin), host, int(port)
            )
            sock.ws = proto
            joined = await asyncio.wait_for(proto.joined, 120)
        except Exception as exc:
            return type(exc).__name__
        return None if joined["type"] == "channel.joined" else f"join:{joined.get('code')}"

    async def talk(
        sock: Sock, t0: float, t1: float, seconds: float, packet_ms: float
    ) -> tuple[int, str, float]:
        """Press at t0 (every talker at once), talk from t1 (or from the grant if later)."""
        await asyncio.sleep(max(0.0, t0 - time.time()))
        pressed = time.time()
        granted = await request(
            sock, {"type": "floor.request", "mode": "webcodecs"}, "floor.granted"
        )
        grant_ms = (time.time() - pressed) * 1000
        if granted["type"] != "floor.granted":
            return 0, f"floor:{granted.get('code')}", grant_ms
        step = packet_ms / 1000
        # Independent talkers are not in phase: each starts somewhere in the first packet.
        await asyncio.sleep(max(0.0, t1 + random.random() * step - time.time()))
        tx_id, start, seq = granted["tx_id"], time.time(), 0
        while (due := start + seq * step) < t1 + seconds:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await sock.ws.send(HEADER.pack(1, 0, seq & 0xFFFF, tx_id, time.time() * 1000) + PAYLOAD)
            seq += 1
        await sock.ws.send(json.dumps({"type": "floor.release", "tx_id": tx_id}))
        return seq, "", grant_ms

    async def heartbeat() -> None:
        """A ping per socket every 30 s, as the page sends: the server counts a socket whose
        presence expired (PRESENCE_TTL_SECONDS) as gone, and it stops being a listener."""
        ping = json.dumps({"type": "ping"})
        while True:
            batch = list(socks)
            for sock in batch:
                with contextlib.suppress(Exception):
                    if isinstance(sock.ws, LeanListener):
                        sock.ws.send_frame(1, ping.encode())
                    else:
                        await sock.ws.send(ping)
                await asyncio.sleep(30 / max(len(batch), 1))
            if not batch:
                await asyncio.sleep(1)

    beating = loop.create_task(heartbeat())
    while line := await stdin.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "connect":
            new = [Sock(s["url"], s["cookie"], s["channel"], s["talker"]) for s in cmd["sockets"]]
            gate = asyncio.Semaphore(cmd.get("parallel", 50))
            results = await asyncio.gather(*(connect(s, gate, cmd["origin"]) for s in new))
            errors: dict[str, int] = defaultdict(int)
            for sock, err in zip(new, results, strict=True):
                if err is None:
                    socks.append(sock)
                else:
                    errors[err] += 1
            listeners: dict[int, int] = defaultdict(int)
            for sock in socks:
                if not sock.talker:
                    listeners[sock.channel] += 1
            reply({"ok": len(socks), "errors": errors, "listeners": listeners})
        elif cmd["cmd"] == "run":
            state.received, state.lat = 0, array("d")
            cpu0 = time.process_time()
            active = set(cmd["active"])
            talkers = [s for s in socks if s.talker and s.channel in active]
            t0, t1, seconds = cmd["t0"], cmd["t1"], cmd["seconds"]
            state.counting = True
            outcome = await asyncio.gather(
                *(talk(s, t0, t1, seconds, cmd["packet_ms"]) for s in talkers),
                return_exceptions=True,
            )
            await asyncio.sleep(max(0.0, t1 + seconds + cmd["drain"] - time.time()))
            state.counting = False
            sent: dict[int, int] = defaultdict(int)
            errors = defaultdict(int)
            grants: list[float] = []
            for sock, res in zip(talkers, outcome, strict=True):
                if isinstance(res, BaseException):
                    errors[type(res).__name__] += 1
                else:
                    sent[sock.channel] += res[0]
                    grants.append(res[2])
                    if res[1]:
                        errors[res[1]] += 1
            with open(cmd["out"], "wb") as f:
                state.lat.tofile(f)
            cpu = time.process_time() - cpu0
            reply(
                {
                    "received": state.received,
                    "sent": sent,
                    "errors": errors,
                    "cpu": cpu,
                    "grants": grants,
                }
            )
        elif cmd["cmd"] == "quit":
            break
    gate = asyncio.Semaphore(200)

    async def close(sock: Sock) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.ws.close(), 10)

    beating.cancel()
    await asyncio.gather(*(close(s) for s in socks))
    for task in readers:
        task.cancel()
    reply({"closed": len(socks)})


# ============================================================== bare websockets relay
async def bare_main(port: int) -> None:
    """The baseline: a minimal relay on the `websockets` library, same framing, no Django,
    no auth, no Redis; binary frames go to every other socket of the channel."""
    import websockets
    from websockets.asyncio.server import serve

    channels: dict[int, set[Any]] = defaultdict(set)
    tx_ids = iter(range(1, 1 << 31))

    async def handler(ws: Any) -> None:
        joined: int | None = None
        try:
            async for msg in ws:
                if type(msg) is bytes:
                    if joined is not None:
                        websockets.broadcast([w for w in channels[joined] if w is not ws], msg)
                    continue
                data = json.loads(msg)
                kind = data.get("type")
                if kind == "channel.join":
                    joined = int(data["channel_id"])
                    channels[joined].add(ws)
                    await ws.send(json.dumps({"type": "channel.joined", "channel": {"id": joined}}))
                elif kind == "floor.request":
                    grant = {"type": "floor.granted", "tx_id": next(tx_ids), "max_ms": 60000}
                    await ws.send(json.dumps({**grant, "packet_ms": 40}))
                elif kind == "floor.release":
                    pass
        finally:
            if joined is not None:
                channels[joined].discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.Future()


# ============================================================== orchestration
@dataclass
class Fixtures:
    cookies: list[str]  # per user index
    channel_ids: list[int]


def make_fixtures(users: int, channels: int, memberships: set[tuple[int, int]]) -> Fixtures:
    """Users with sessions, public channels and memberships, written straight to the
    benchmark database (this is setup, not the code under test)."""
    import django

    django.setup()
    from accounts.models import Profile, User
    from voice.models import Channel, ChannelMembership

    tag = os.environ["REDIS_KEY_PREFIX"].rstrip(":")
    User.objects.bulk_create(
        [User(email=f"{tag}-{i}@example.com", password="!bench") for i in range(users)],
        batch_size=500,
    )
    people = list(User.objects.filter(email__startswith=f"{tag}-").order_by("pk"))
    Profile.objects.bulk_create([Profile(user=u, nickname=f"b{u.pk}") for u in people], 500)
    cookies = sessions_with_devices(people)
    Channel.objects.bulk_create([Channel(name=f"{tag}-{i}") for i in range(channels)], 500)
    chans = list(Channel.objects.filter(name__startswith=f"{tag}-").order_by("pk"))
    ChannelMembership.objects.bulk_create(
        [ChannelMembership(channel=chans[c], user=people[u]) for c, u in memberships],
        batch_size=500,
        ignore_conflicts=True,
    )
    return Fixtures(cookies, [c.pk for c in chans])


@dataclass
class Layout:
    """Which user is in which channel (index space), and who talks."""

    groups: list[list[int]]  # per channel index: user indices, the first one talks

    @property
    def sockets(self) -> int:
        return sum(len(g) for g in self.groups)


def layout(channels: int, members: int, offset: int = 0) -> Layout:
    return Layout(
        [list(range(offset + c * members, offset + (c + 1) * members)) for c in range(channels)]
    )


@dataclass
class RunResult:
    sockets: int
    talkers: int
    sent: int
    expected: int
    delivered: int
    seconds: float
    lat: list[float]
    server_cpu: float  # CPU seconds of all server processes during the run
    client_cpu: float  # and of all client processes
    errors: dict[str, int]
    grants: list[float]  # ms from each talker's press to its floor.granted
    wall: float  # seconds the step took, presses included (for CPU %)
    press_cpu: float = float("nan")  # server CPU seconds of the presses (PressWindow)
    clients: int = 1  # client processes (for CPU % per process)

    @property
    def pct(self) -> float:
        return 100.0 * self.delivered / self.expected if self.expected else 0.0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.lat, q)

    @property
    def ok(self) -> bool:
        return self.expected > 0 and self.delivered >= self.expected and self.p(99) <= P99_LIMIT_MS


class Clients:
    """Client processes holding the sockets of one layout against one set of servers."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--client"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]

    def ask(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for proc, cmd in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        out = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a client process died; see its stderr above")
            out.append(json.loads(line))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask([{"cmd": "quit"}] * len(self.procs))
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


class Target:
    """The servers under test: two ASGI processes of the app, or the bare relay."""

    def __init__(self, kind: str, bench: BenchEnv, procs: int) -> None:
        self.kind = kind
        self.bench = bench
        cmd = [sys.executable, __file__, "--bare-server"] if kind == "bare" else None
        self.servers: list[Server] = [
            start_server(kind, bench.env, cmd=cmd) for _ in range(1 if kind == "bare" else procs)
        ]

    def cpu(self) -> float:
        return sum(cpu_seconds(s.process.pid) for s in self.servers)

    def stop(self) -> None:
        for s in self.servers:
            stop_server(s)
        # Floors, live members and relay keys of the stopped servers must not leak into the
        # next target's run.
        import redis

        r = redis.Redis.from_url(self.bench.env["REDIS_URL"])
        batch = list(r.scan_iter(match=self.bench.env["REDIS_KEY_PREFIX"] + "*", count=1000))
        for i in range(0, len(batch), 500):
            r.delete(*batch[i : i + 500])


def settle(target: Target, limit: float = 600.0) -> float:
    """Wait until the servers are idle again; returns how long that took.

    Every join announces the member to the whole channel through a Channels group, so N
    sockets joining one channel cost O(N^2) group messages; measuring audio while that is
    still being delivered would measure the joins."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = target.cpu()
        time.sleep(1.0)
        # Idle, give or take the clients' 30 s heartbeats (3,500 sockets: about 4 % a core).
        if target.cpu() - before < 0.08 * len(target.servers):
            break
    return time.monotonic() - started


def open_sockets(
    target: Target, lay: Layout, fx: Fixtures, clients: Clients
) -> tuple[dict[int, int], dict[str, int]]:
    per_client: list[list[dict[str, Any]]] = [[] for _ in clients.procs]
    n = 0
    for c, group in enumerate(lay.groups):
        for pos, user in enumerate(group):
            server = target.servers[n % len(target.servers)]
            per_client[n % len(per_client)].append(
                {
                    "url": f"{server.ws_url}/ws/cbline/?device=bench-{user}",
                    "cookie": fx.cookies[user],
                    "channel": fx.channel_ids[c],
                    "talker": pos == 0,
                }
            )
            n += 1
    answers = clients.ask(
        [
            {"cmd": "connect", "sockets": socks, "origin": "http://127.0.0.1", "parallel": 50}
            for socks in per_client
        ]
    )
    listeners: dict[int, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for a in answers:
        for ch, k in a["listeners"].items():
            listeners[int(ch)] += k
        for err, k in a["errors"].items():
            errors[err] += k
    return listeners, errors


class PressWindow:
    """Server CPU of the presses: from just before them (t0) for a second (or until the talk
    at t1), less what the servers spend idle (client heartbeats, server pings) at the rate
    measured in the 0.7 s before. Only the presses' work runs then, so CPU per press is a
    count that load barely moves, unlike the grant time. With `profile`, py-spy records each
    server over the window."""

    def __init__(self, target: Target, t0: float, t1: float, profile: str) -> None:
        self.target, self.cpu, self.spies = target, [0.0, 0.0, 0.0], []
        self.idle = t0 - 0.75
        self.start = t0 - 0.05  # the press frames leave the clients at t0
        self.end = max(self.start + 0.1, min(t0 + 1.0, t1 - 0.2))  # before the first packet
        self.thread = threading.Thread(target=self._run, args=(profile,), daemon=True)
        self.thread.start()

    def _run(self, profile: str) -> None:
        time.sleep(max(0.0, self.idle - time.time()))
        self.cpu[0] = self.target.cpu()
        for s in self.target.servers if profile else ():
            out = f"{profile}-{s.process.pid}.txt"
            argv = ["py-spy", "record", "--pid", str(s.process.pid), "--rate", "1000"]
            argv += ["--format", "raw", "-o", out, "--nonblocking"]
            self.spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        time.sleep(max(0.0, self.start - time.time()))
        self.cpu[1] = self.target.cpu()
        time.sleep(max(0.0, self.end - time.time()))
        self.cpu[2] = self.target.cpu()
        for spy in self.spies:  # py-spy writes its file on SIGINT
            spy.send_signal(signal.SIGINT)
            spy.wait()

    def result(self) -> float:
        self.thread.join()
        idle_rate = (self.cpu[1] - self.cpu[0]) / (self.start - self.idle)
        return max(0.0, self.cpu[2] - self.cpu[1] - idle_rate * (self.end - self.start))


def run_step(
    target: Target,
    clients: Clients,
    listeners: dict[int, int],
    active: list[int],
    seconds: float,
    packet_ms: float,
    press_seconds: float,
    profile: str = "",
) -> RunResult:
    t0 = time.time() + 1.0
    t1 = t0 + press_seconds
    cpu0 = target.cpu()
    window = PressWindow(target, t0, t1, profile) if press_seconds > 0 else None
    outs = [VAR / f"bench-lat-{os.getpid()}-{i}.bin" for i in range(len(clients.procs))]
    answers = clients.ask(
        [
            {
                "cmd": "run",
                "t0": t0,
                "t1": t1,
                "seconds": seconds,
                "packet_ms": packet_ms,
                "active": active,
                "drain": DRAIN_SECONDS,
                "out": str(out),
            }
            for out in outs
        ]
    )
    cpu = target.cpu() - cpu0
    wall = time.time() - t0 + 1.0
    press_cpu = window.result() if window is not None else float("nan")
    lat = array("d")
    for out in outs:
        lat.frombytes(out.read_bytes())
        out.unlink()
    sent: dict[int, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for a in answers:
        for ch, k in a["sent"].items():
            sent[int(ch)] += k
        for err, k in a["errors"].items():
            errors[err] += k
    return RunResult(
        sockets=sum(listeners.values()) + len(active),
        talkers=len(active),
        sent=sum(sent.values()),
        expected=sum(k * listeners.get(ch, 0) for ch, k in sent.items()),
        delivered=sum(a["received"] for a in answers),
        seconds=seconds,
        lat=sorted(lat),
        server_cpu=cpu,
        client_cpu=sum(a["cpu"] for a in answers),
        errors=dict(errors),
        grants=sorted(g for a in answers for g in a["grants"]),
        wall=wall,
        press_cpu=press_cpu,
    )


RESULT_HEADERS = [
    "server",
    "procs",
    "sockets",
    "talkers",
    "packets sent",
    "expected",
    "delivered",
    "delivered %",
    "deliveries/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "server CPU %",
    "server CPU us/delivery",
    "client CPU %",
    "ok",
    "grant p50 ms",
    "grant p99 ms",
    "press CPU ms/press",
]


def result_row(target: Target, r: RunResult) -> list[object]:
    return [
        target.kind,
        len(target.servers),
        r.sockets,
        r.talkers,
        r.sent,
        r.expected,
        r.delivered,
        round(r.pct, 3),
        r.rate,
        r.p(50),
        r.p(99),
        r.lat[-1] if r.lat else float("nan"),
        100 * r.server_cpu / r.wall,
        1e6 * r.server_cpu / max(1, r.delivered),
        100 * r.client_cpu / r.wall,
        "yes" if r.ok else "NO",
        percentile(r.grants, 50),
        percentile(r.grants, 99),
        1000 * r.press_cpu / max(1, r.talkers),
    ]


def scenario_fixed(
    name: str,
    lay: Layout,
    kinds: list[str],
    args: argparse.Namespace,
    bench: BenchEnv,
    fx: Fixtures,
) -> str:
    rows, notes = [], []
    for kind in kinds:
        target = Target(kind, bench, args.procs)
        clients = Clients(args.clients)
        try:
            opened = time.monotonic()
            listeners, errors = open_sockets(target, lay, fx, clients)
            opened = time.monotonic() - opened
            if errors:
                notes.append(f"{kind}: sockets that failed to open/join: {dict(errors)}")
            quiet = settle(target)
            notes.append(
                f"{kind}: sockets opened and joined in {opened:.1f} s; servers busy "
                f"{quiet:.1f} s more with the join announcements before the measurement"
            )
            active = [fx.channel_ids[c] for c in range(len(lay.groups))]
            profile = f"{args.profile_presses}-{name[0]}-{kind}" if args.profile_presses else ""
            r = run_step(
                target,
                clients,
                listeners,
                active,
                args.seconds,
                args.packet_ms,
                args.press_seconds,
                profile,
            )
            if r.errors:
                notes.append(f"{kind}: talker errors: {r.errors}")
            rows.append(result_row(target, r))
            print(f"  {name} {kind}: {r.delivered}/{r.expected} p99 {r.p(99):.1f} ms", flush=True)
        finally:
            clients.close()
            target.stop()
    return "\n".join([table(name, RESULT_HEADERS, rows), *notes])


def ladder_coarse(first: int, top: int) -> list[int]:
    """Channel counts that grow by half each step from `first`, up to `top`."""
    steps, k = [], first
    while k < top:
        steps.append(k)
        k = max(k + 1, round(k * 1.5))
    return [*steps, top]


def ladder_runs(
    target: Target,
    clients: Clients,
    listeners: dict[int, int],
    fx: Fixtures,
    args: argparse.Namespace,
    k: int,
) -> list[RunResult]:
    """`--sat-repeats` runs of one ladder step: the first k channels talking."""
    active = [fx.channel_ids[c] for c in range(k)]
    runs = []
    for _ in range(args.sat_repeats):
        r = run_step(
            target, clients, listeners, active, args.sat_seconds, args.packet_ms, args.press_seconds
        )
        r.clients = len(clients.procs)
        runs.append(r)
    return runs


def _step_summary(
    kind: str, procs: int, k: int, offered: float, runs: list[RunResult]
) -> list[object]:
    rates = sorted(r.rate for r in runs)
    p99s = sorted(r.p(99) for r in runs)
    pcts = sorted(r.pct for r in runs)
    cpu_us = sorted(1e6 * r.server_cpu / max(1, r.delivered) for r in runs)
    srv = sorted(100 * r.server_cpu / r.wall / procs for r in runs)
    cli = sorted(100 * r.client_cpu / r.wall / r.clients for r in runs)
    ok = sum(r.ok for r in runs)

    def mmm(xs: list[float], digits: int = 0) -> str:
        return " / ".join(f"{x:,.{digits}f}" for x in (xs[0], xs[len(xs) // 2], xs[-1]))

    return [
        kind,
        procs,
        k,
        round(offered),
        mmm(pcts, 2),
        mmm(rates),
        mmm(p99s, 1),
        mmm(cpu_us, 1),
        f"{srv[len(srv) // 2]:.0f}",
        f"{cli[len(cli) // 2]:.0f}",
        f"{ok}/{len(runs)}",
    ]


def scenario_saturation(
    kinds: list[str], args: argparse.Namespace, bench: BenchEnv, fx: Fixtures, lay: Layout
) -> str:
    """For each server: a coarse ladder of talking channels until a step fails (median of
    `--sat-repeats` runs: delivery < 100 % or p99 > 50 ms), then bisection between the last
    good and the first failed step, so the knee is found to one channel and the ladder's top
    is never mistaken for a server's limit. Ours runs at each of `--sat-procs`; the bare
    relay is one process, so the like-for-like ratio is ours at 1 process against it."""
    rows: list[list[object]] = []
    best: dict[str, float] = {}
    notes: list[str] = []
    targets = [(k, n) for k in kinds if k != "bare" for n in args.sat_procs]
    if "bare" in kinds:
        targets.append(("bare", 1))
    top = len(lay.groups)
    for kind, procs in targets:
        target = Target(kind, bench, procs)
        clients = Clients(args.clients)
        label = f"{kind} x{procs}"
        try:
            opened = time.monotonic()
            listeners, errors = open_sockets(target, lay, fx, clients)
            opened = time.monotonic() - opened
            if errors:
                notes.append(f"{label}: sockets that failed to open/join: {dict(errors)}")
            quiet = settle(target)
            notes.append(
                f"{label}: {sum(listeners.values())} sockets opened and joined in {opened:.1f} "
                f"s; servers busy {quiet:.1f} s more with the join announcements"
            )
            plan = iter(ladder_coarse(args.sat_first, top))
            good, bad, steps = 0, 0, 0
            k: int | None = next(plan, None)
            while k is not None and steps < args.sat_max_steps:
                runs = ladder_runs(target, clients, listeners, fx, args, k)
                steps += 1
                offered = sum(listeners[c] for c in fx.channel_ids[:k]) * 1000 / args.packet_ms
                rows.append(_step_summary(kind, procs, k, offered, runs))
                median_rate = sorted(r.rate for r in runs)[len(runs) // 2]
                ok = sum(r.ok for r in runs) * 2 > len(runs)  # the median run
                print(f"  c {label} {k} ch: {'ok' if ok else 'FAIL'} {median_rate:,.0f}/s")
                if ok:
                    good = k
                    best[label] = max(best.get(label, 0.0), median_rate)
                else:
                    bad = k
                # Past the first failure: bisect between the last good step and it.
                bisect = (good + bad) // 2 if bad - good > 1 else None
                k = bisect if bad else next(plan, None)
            if not bad:
                notes.append(f"{label}: never failed up to {top} channels (raise --sat-max)")
        finally:
            clients.close()
            target.stop()
    headers = [
        "server",
        "procs",
        "talking channels",
        "offered deliveries/s",
        "delivered % min/med/max",
        "deliveries/s min/med/max",
        "p99 ms min/med/max",
        "server CPU us/delivery min/med/max",
        "server CPU % per process",
        "client CPU % per process",
        "runs ok",
    ]
    summary = [[k, round(v)] for k, v in best.items()]
    ours1 = max(
        (v for k, v in best.items() if not k.startswith("bare") and k.endswith("x1")), default=0.0
    )
    if best.get("bare x1") and ours1:
        ratio = round(ours1 / best["bare x1"], 3)
        summary.append(["ratio ours x1 / bare x1 (same process count)", ratio])
    return "\n".join(
        [
            table("c) saturation ladder (each step repeated)", headers, rows),
            "",
            table(
                "c) highest sustained deliveries/s (median run: 100 % delivered, p99 <= 50 ms)",
                ["server", "deliveries/s"],
                summary,
            ),
            "A group at ~100 % CPU per process is the limit; clients near 100 % mean the "
            "clients, not the server, were measured.",
            *notes,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scenarios", default="a,b,c")
    parser.add_argument("--servers", default="daphne,uvicorn", help="ASGI servers to compare")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare websockets relay")
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        help="ASGI processes per server kind in a and b (1: the bare relay's count)",
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument(
        "--listener-client",
        choices=["lean", "websockets"],
        default="lean",
        help="listener sockets: the lean RFC 6455 client here, or the websockets library",
    )
    parser.add_argument("--listeners", type=int, default=1000, help="scenario a")
    parser.add_argument("--channels", type=int, default=200, help="scenario b")
    parser.add_argument("--members", type=int, default=5, help="scenario b")
    parser.add_argument("--seconds", type=float, default=20.0, help="scenarios a and b")
    parser.add_argument("--packet-ms", type=float, default=40.0)
    parser.add_argument(
        "--press-seconds",
        type=float,
        default=3.0,
        help="every talker presses at once, then all talk together this long after: the "
        "grant time is reported on its own and the audio latency is that of steady talk "
        "(0: talk from one's own grant, the presses' work inside the measurement)",
    )
    parser.add_argument(
        "--profile-presses",
        default="",
        metavar="PATH",
        help="scenarios a and b: record the servers with py-spy from the presses to the talk "
        "(PATH-<scenario>-<server>-<pid>.txt, collapsed stacks: flamegraph.pl or speedscope)",
    )
    parser.add_argument("--sat-members", type=int, default=100, help="scenario c: per channel")
    parser.add_argument(
        "--sat-max", type=int, default=60, help="scenario c: most talking channels (sockets open)"
    )
    parser.add_argument("--sat-first", type=int, default=5, help="scenario c: first step")
    parser.add_argument("--sat-repeats", type=int, default=3, help="scenario c: runs per step")
    parser.add_argument("--sat-max-steps", type=int, default=10, help="scenario c: steps at most")
    parser.add_argument(
        "--sat-procs", default="1,2", help="scenario c: our process counts (bare: always 1)"
    )
    parser.add_argument("--sat-seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke run")
    parser.add_argument("--database-url", default="", help="default: a throwaway SQLite file")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client:
        asyncio.run(client_main())
        return
    if args.bare_server:
        asyncio.run(bare_main(args.bare_server))
        return
    os.environ["PTT_BENCH_LISTENER_CLIENT"] = args.listener_client  # the client processes'
    if args.quick:
        args.listeners, args.channels, args.seconds = 100, 20, 4.0
        args.sat_members, args.sat_seconds = 20, 3.0
        args.sat_max, args.sat_first, args.sat_repeats = 6, 2, 1
    args.sat_procs = [int(n) for n in str(args.sat_procs).split(",")]
    scenarios = args.scenarios.split(",")
    kinds = args.servers.split(",")

    lay_a = layout(1, args.listeners + 1)
    lay_b = layout(args.channels, args.members)
    lay_c = layout(args.sat_max, args.sat_members)
    users = max(lay.sockets for lay in (lay_a, lay_b, lay_c))
    chans = max(len(lay.groups) for lay in (lay_a, lay_b, lay_c))
    members = {(c, u) for lay in (lay_a, lay_b, lay_c) for c, g in enumerate(lay.groups) for u in g}

    bench = bench_env(args.database_url, args.redis_url)
    bench.apply()
    print(f"benchmark {bench.run_id}: migrating, {users} users, {chans} channels", flush=True)
    migrate(bench)
    fx = make_fixtures(users, chans, members)
    started = time.time()
    load_before = f"{os.getloadavg()[0]:.2f}"
    out: list[str] = []
    try:
        bare = [] if args.no_bare else ["bare"]
        if "a" in scenarios:
            out.append(
                scenario_fixed(
                    f"a) one talker, {args.listeners} listeners in one channel, {args.seconds:g} s",
                    lay_a,
                    [*kinds, *bare],
                    args,
                    bench,
                    fx,
                )
            )
        if "b" in scenarios:
            out.append(
                scenario_fixed(
                    f"b) {args.channels} channels x {args.members} members, all talking, "
                    f"{args.seconds:g} s",
                    lay_b,
                    [*kinds, *bare],
                    args,
                    bench,
                    fx,
                )
            )
        if "c" in scenarios:
            out.append(scenario_saturation([*kinds, *bare], args, bench, fx, lay_c))
    finally:
        cleanup(bench)
    print()
    print(
        f"load average before {load_before}, after {os.getloadavg()[0]:.2f} (other work on "
        "the machine adds latency);"
    )
    print(
        f"{os.cpu_count()} CPUs shared by servers, Redis and {args.clients} client processes; "
        f"{args.packet_ms:g} ms packets of {HEADER.size + len(PAYLOAD)} bytes; "
        f"listeners on the {args.listener_client} client; "
        f"latency = listener receive - talker send stamp; total {time.time() - started:.0f} s"
    )
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
