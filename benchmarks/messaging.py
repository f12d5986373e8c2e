"""CallsApp delivery: send-to-deliver latency over two uvicorn processes, with real Olm and
Megolm payloads from Python vodozemac devices, a kill -9 of one process mid-run, and the
memory per idle `/ws/messaging/` socket against a bare `websockets` server.

`--clients` (2) client processes each build their share of `--pairs` (A -> B, a direct
room each) through the app's own services: A's Megolm session key reaches B over the
server as an Olm to-device message (claimed one-time key, real ciphertext). Each receiver
B holds `/ws/messaging/` on the process its sender does NOT use (every message crosses
processes through Redis), says `hello{last_seq}`, decrypts every timeline event with its
inbound Megolm session and acks. Senders send `send{room_id, txn_id, content}` on their own
`/ws/messaging/` socket (answered `sent{txn_id, event_id}`; they ack the delivered ticks
that come back on it), or with `--http` PUT `rooms/{id}/send/m.room.encrypted/{txn}`, on an
open-loop schedule of `--rates` messages/s in total (one step per rate, `--seconds` each);
the send time and the scheduled time are inside the Megolm ciphertext, so a latency is
only counted for a message that decrypted. Latency: receive - send, and receive -
scheduled instant (includes any queueing in the client when it falls behind).

With `--kill`, the second process gets SIGKILL at half time of the last step: its
receivers reconnect to the survivor with `hello{last acked seq}`, its senders resend the
request in flight with the same txnId (applied once by the server). Columns: `lost` (sent,
not delivered within `--drain` (60) seconds after the step's last send), `applied twice`
(one txnId stored as two events), `redelivered` (a frame sent again after a reconnect,
deduped by event id: at-least-once by design).

Each step prints the CPU of every process group (servers, clients, the PostgreSQL server,
Redis), in % and per message, so the limit of a step on this machine can be read off, and
the PostgreSQL sessions opened per message. The PostgreSQL server's CPU is shared with
other work on the machine: "own backends" counts only the backends of the run's database
(the servers keep their connections), and "PG transactions/msg" counts its transactions
(a statement in autocommit is one).

`--idle` (10,000) then opens that many idle CallsApp sockets on a fresh uvicorn process
and on the bare server (benchmarks/idle_memory.py) and prints KiB per socket and the ratio.

    python benchmarks/messaging.py --quick                         # smoke: 20 pairs, 20/s
    python benchmarks/messaging.py --rates 100,200,400 --kill      # a ladder, kill in the last
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Server,
    bench_env,
    cleanup,
    cpu_seconds,
    migrate,
    percentile,
    start_server,
    stop_server,
    table,
)
from realtime import gc_policy

CSRF = "b" * 32  # a CSRF secret of our own: cookie and header must agree


def sync_socket(port: int, session_key: str) -> Any:
    """A device's /ws/messaging/ socket (await it, or use it with `async with`)."""
    return connect(
        f"ws://127.0.0.1:{port}/ws/messaging/",
        additional_headers={
            "Cookie": f"sessionid={session_key}",
            "Origin": f"http://127.0.0.1:{port}",
        },
        compression=None,
        max_size=2**22,
        open_timeout=120,
        # Browsers send no pings; the library's own 20 s timeout closed every receiver
        # (1011) on the loaded machine. The server's pings still run.
        ping_interval=None,
    )


@dataclass
class Person:
    user_id: int
    mxid: str
    session_key: str
    olm: Any  # tests.messaging.olm.OlmDevice


@dataclass
class Pair:
    sender: Person
    receiver: Person
    room_id: str
    group: Any  # the sender's outbound Megolm session
    server: int  # the sender's process; the receiver starts on the other one


@dataclass
class Stats:
    """One client process's view of a step."""

    sent: int = 0  # PUTs answered 200
    sent_txns: set[str] = field(default_factory=set)
    delivered: dict[str, tuple[float, float]] = field(default_factory=dict)  # txn -> (ms, ms)
    sent_at: dict[str, float] = field(default_factory=dict)  # txn -> send start (epoch s)
    redelivered: int = 0
    applied_twice: int = 0  # one txn stored as two events: the idempotency key failed
    event_of: dict[str, str] = field(default_factory=dict)  # txn -> event id
    resent: int = 0
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def build_world(pairs: int, offset: int = 0) -> list[Pair]:
    """Users, login sessions with issued devices, uploaded keys, direct rooms and the room
    keys sent over Olm, written through the app's own services."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import Profile, User
    from accounts.selectors import DEVICE_SESSION_KEY
    from accounts.services import device_issue
    from messaging.ids import mxid
    from messaging.schemas import DeviceKeysBody
    from messaging.services import keys_claim, keys_upload, room_create, to_device_send
    from tests.messaging.olm import OlmDevice

    def person(n: int) -> tuple[Person, Any]:
        user = User.objects.create_user(email=f"bench{offset}-{n}-{time.time_ns()}@example.com")
        # Old enough for CallsApp (10): the API and the socket refuse anyone else.
        Profile.objects.create(user=user, nickname=f"m{user.pk}", birth_date=dt.date(1990, 1, 1))
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        assert store.session_key is not None
        device = device_issue(user=user, session_key=store.session_key)
        store[DEVICE_SESSION_KEY] = device.pk
        store.save()
        olm = OlmDevice(mxid(user.pk), device.device_id)
        keys_upload(
            device=device,
            device_keys=DeviceKeysBody.model_validate(olm.device_keys()),
            one_time_keys=olm.one_time_keys(2),
            fallback_keys=olm.fallback_key(),
        )
        return Person(user.pk, mxid(user.pk), store.session_key, olm), (user, device)

    world = []
    for i in range(pairs):
        a, (a_user, a_device) = person(2 * i)
        b, _ = person(2 * i + 1)
        room = room_create(creator=a_user, name="", invite=[b.mxid], is_direct=True)
        group = a.olm.megolm_session()
        claimed = keys_claim(user=a_user, wanted={b.mxid: {b.olm.device_id: "signed_curve25519"}})[
            "one_time_keys"
        ]
        (otk,) = claimed[b.mxid][b.olm.device_id].values()
        content = a.olm.olm_encrypt(
            b.olm.curve25519, otk["key"], a.olm.room_key_payload(room.room_id, group)
        )
        to_device_send(
            device=a_device,
            event_type="m.room.encrypted",
            txn_id="roomkey",
            messages={b.mxid: {b.olm.device_id: content}},
        )
        world.append(Pair(a, b, room.room_id, group, (offset + i) % 2))
    return world


class Http:
    """A keep-alive HTTP/1.1 connection: just enough client for PUT and a JSON answer."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port, self.cookie = port, cookie
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()  # one request at a time on the connection

    async def put(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.lock:
            return await self._put(path, body)

    async def _put(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Cookie: sessionid={self.cookie}; csrftoken={CSRF}\r\nX-CSRFToken: {CSRF}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# The browser's delayed ack (static/messaging/js/acks.js): a live frame's ack waits this
# long, or rides on the next send; the backlog after a hello, or this many held, at once.
ACK_DELAY_S = 0.25
ACK_MAX_HELD = 16


class DelayedAck:
    """A socket's acks, delayed as the browser delays them."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seq: int | None = None
        self.held = 0
        self.timer: asyncio.TimerHandle | None = None
        self.sending: set[asyncio.Task[None]] = set()

    def stored(self, seq: int, *, now: bool) -> None:
        self.seq = seq if self.seq is None else max(seq, self.seq)
        self.held += 1
        if now or self.held >= ACK_MAX_HELD:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self.flush)

    def take(self) -> int | None:
        seq, self.seq, self.held = self.seq, None, 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return seq

    def flush(self) -> None:
        seq = self.take()
        if seq is not None:
            task = asyncio.ensure_future(self._send(seq))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, seq: int) -> None:
        with contextlib.suppress(Exception):  # closed: the next hello says where we are
            await self.ws.send(json.dumps({"type": "ack", "seq": seq}))


class SenderSocket:
    """The sender's own `/ws/messaging/` socket: `send{room_id, txn_id, content}` answered by
    `sent{txn_id, event_id}` (or an error frame whose ref is the txn_id); it acks the
    delivered ticks that come back on it as the browser does: delayed, and carried by the
    next send when one goes first."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.ws: Any = None
        self.port = 0
        self.acked = 0
        self.pending: dict[str, asyncio.Future[str]] = {}
        self.opening: asyncio.Lock = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None
        self.acks: DelayedAck | None = None

    async def send(self, port: int, room_id: str, txn: str, content: Any) -> str:
        await self.open(port)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending[txn] = answer
        frame = {"type": "send", "room_id": room_id, "txn_id": txn, "content": content}
        ack = self.acks.take() if self.acks is not None else None
        if ack is not None:
            frame["ack"] = ack
        try:
            await self.ws.send(json.dumps(frame))
            return await answer
        finally:
            self.pending.pop(txn, None)

    async def open(self, port: int) -> None:
        async with self.opening:
            if self.ws is not None and self.port == port:
                return
            await self.close()
            self.ws = await sync_socket(port, self.person.session_key)
            self.port = port
            self.acks = DelayedAck(self.ws)
            await self.ws.send(json.dumps({"type": "hello", "last_seq": self.acked}))
            self.reader = asyncio.create_task(self.read(self.ws, self.acks))

    async def read(self, ws: Any, acks: DelayedAck) -> None:
        live = False
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "sent":
                    self._settle(frame["txn_id"], frame["event_id"])
                elif kind == "error" and frame.get("ref") in self.pending:
                    self._settle(frame["ref"], RuntimeError(f"{frame['code']} {frame['detail']}"))
                elif kind == "caught_up":
                    live = True
                elif kind == "sync" and frame.get("seq"):
                    self.acked = frame["seq"]
                    acks.stored(self.acked, now=not live)
        except Exception:  # closed: every pending send fails below, and is resent
            pass
        finally:
            acks.take()
            if self.ws is ws:
                self.ws = None
            for txn in list(self.pending):
                self._settle(txn, ConnectionError("sender socket closed"))

    def _settle(self, txn: str, outcome: str | BaseException) -> None:
        future = self.pending.get(txn)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()


# ============================================================== client process
class Client:
    """The pairs of one client process: receivers held open across steps, senders per step."""

    def __init__(self, world: list[Pair], ports: list[int], inflight: int, http: bool) -> None:
        self.world, self.ports = world, ports
        self.http = http  # the old path: a PUT per message instead of the sender's socket
        self.sockets = {id(p): SenderSocket(p.sender) for p in world}
        # PUTs in flight: each takes a server thread and its own PostgreSQL connection
        # (Django's ASGI handler runs every request in a thread of its own), and the
        # PostgreSQL server is shared; past the cap, sends wait in the client (and show in
        # "p99 from schedule"). Socket senders have no such cap: each is a device of its
        # own, and 200 devices do not take turns (a cap of 8 a process did limit them).
        self.gate = asyncio.Semaphore(inflight) if http else contextlib.nullcontext()
        self.alive = [True] * len(ports)
        self.stats = Stats()
        self.pools: dict[int, list[Http]] = {id(p): [] for p in world}
        self.sender_server = {id(p): p.server for p in world}
        self.done = asyncio.Event()
        self.receivers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        readies = [asyncio.Event() for _ in self.world]
        pairs = zip(self.world, readies, strict=True)
        self.receivers = [asyncio.create_task(self.receive(p, r)) for p, r in pairs]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
        if not self.http:
            # The senders' sockets too, before the first step: a step measures the sends,
            # not 200 hellos (each a key-count read, a stream read and a session read).
            await asyncio.gather(
                *(self.sockets[id(p)].open(self.ports[p.server]) for p in self.world)
            )

    def other(self, server: int) -> int:
        return (server + 1) % len(self.ports)

    async def receive(self, pair: Pair, ready: asyncio.Event) -> None:
        b = pair.receiver
        server = self.other(pair.server)
        acked = 0
        seen: set[str] = set()
        while not self.done.is_set():
            port = self.ports[server]
            try:
                async with sync_socket(port, b.session_key) as ws:
                    acks, live = DelayedAck(ws), False
                    await ws.send(json.dumps({"type": "hello", "last_seq": acked}))
                    async for raw in ws:
                        frame = json.loads(raw)
                        kind = frame.get("type")
                        if kind == "caught_up":
                            ready.set()
                            live = True
                            continue
                        if kind != "sync":
                            continue
                        self.apply(b, frame["sync"], seen)
                        if frame.get("seq"):
                            acked = frame["seq"]
                            acks.stored(acked, now=not live)
                    acks.take()
                # Closed cleanly by the server (a reconnect code): come back to it.
                if not self.done.is_set():
                    self.stats.reconnects += 1
                    code = ws.close_code
                    why = f"reconnect: closed {code}"
                    self.stats.errors[why] = self.stats.errors.get(why, 0) + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the process was killed (or closed us): the other one
                if self.done.is_set():
                    return
                self.stats.reconnects += 1
                rcvd = getattr(exc, "rcvd", None)
                why = f"reconnect: {type(exc).__name__}" + (f" {rcvd.code}" if rcvd else "")
                self.stats.errors[why] = self.stats.errors.get(why, 0) + 1
                server = self.other(server)
                await asyncio.sleep(0.05)

    def apply(self, b: Person, sync: dict[str, Any], seen: set[str]) -> None:
        stats = self.stats
        for event in sync.get("to_device", {}).get("events", []):
            b.olm.accept_room_key(b.olm.olm_decrypt(event["content"]))
        now = time.time()
        for room in sync.get("rooms", {}).get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                if event["type"] != "m.room.encrypted":
                    continue
                if event["event_id"] in seen:
                    stats.redelivered += 1
                    continue
                seen.add(event["event_id"])
                decrypted = b.olm.megolm_decrypt(event["content"])
                body = json.loads(decrypted["content"]["body"])
                txn = body["txn"]
                if stats.event_of.setdefault(txn, event["event_id"]) != event["event_id"]:
                    stats.applied_twice += 1
                    continue
                stats.delivered[txn] = ((now - body["sent"]) * 1000, (now - body["due"]) * 1000)
                stats.sent_at[txn] = body["sent"]

    async def put(self, pair: Pair, path: str, body: bytes) -> tuple[int, bytes]:
        pool = self.pools[id(pair)]
        port = self.ports[self.sender_server[id(pair)]]
        while pool:
            http = pool.pop()
            if http.port != port:
                http.close()
                continue
            try:
                answer = await http.put(path, body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                # An idle keep-alive connection the server closed (uvicorn: after 5 s):
                # the request never reached the app; try a fresh connection.
                http.close()
                continue
            pool.append(http)
            return answer
        http = Http(port, pair.sender.session_key)
        try:
            answer = await http.put(path, body)
        except BaseException:
            http.close()
            raise
        pool.append(http)
        return answer

    async def send_one(self, pair: Pair, txn: str, due: float) -> None:
        stats = self.stats
        path = f"/messaging/_matrix/client/v3/rooms/{pair.room_id}/send/m.room.encrypted/{txn}"
        sent = time.time()
        body = json.dumps({"txn": txn, "due": due, "sent": sent})
        # Inside the Megolm ciphertext (megolm_encrypt wraps it as the m.text body); a
        # resend carries the same request, as a client's retry does.
        content = pair.sender.olm.megolm_encrypt(pair.group, pair.room_id, body)
        http_body = json.dumps(content).encode() if self.http else b""
        tries = 0
        while True:
            server = self.sender_server[id(pair)]
            try:
                async with self.gate:
                    if self.http:
                        status, answer = await self.put(pair, path, http_body)
                        if status != 200:
                            raise RuntimeError(f"{status} {answer[:120]!r}")
                    else:
                        # asyncio.timeout, not wait_for: no task of its own per send.
                        async with asyncio.timeout(120):
                            await self.sockets[id(pair)].send(
                                self.ports[server], pair.room_id, txn, content
                            )
                stats.sent += 1
                stats.sent_txns.add(txn)
                return
            except (
                OSError,
                ConnectionError,
                asyncio.IncompleteReadError,
                ConnectionClosed,
                InvalidHandshake,  # the killed process's backlog took the connection
            ):
                # A fresh connection failed too: the process died under us. Resend to the
                # other one with the same txnId (unless a sibling request moved already).
                if self.sender_server[id(pair)] == server:
                    self.sender_server[id(pair)] = self.other(server)
                stats.resent += 1
                tries += 1
                if tries > 20:
                    raise
                await asyncio.sleep(0.05)

    async def step(
        self, prefix: str, rate: float, seconds: float, start_at: float, drain: float
    ) -> dict:
        self.stats = stats = Stats()
        total = int(rate * seconds)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        tasks = []
        for n in range(total):
            due = start_at + n / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pair = self.world[n % len(self.world)]
            tasks.append(asyncio.create_task(self.send_one(pair, f"{prefix}{n}", due)))
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        sent_for = time.time() - start_at
        for out in outcomes:
            if isinstance(out, BaseException):
                why = f"{type(out).__name__}: {out}"[:100]
                stats.errors[why] = stats.errors.get(why, 0) + 1
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not stats.sent_txns <= stats.delivered.keys():
            await asyncio.sleep(0.05)
        return {
            "scheduled": total,
            "sent": stats.sent,
            "delivered": len(stats.sent_txns & stats.delivered.keys()),
            "lost": len(stats.sent_txns - stats.delivered.keys()),
            "latency_sent": [v[0] for v in stats.delivered.values()],
            "latency_due": [v[1] for v in stats.delivered.values()],
            "latency_at": [(stats.sent_at[t], v[0]) for t, v in stats.delivered.items()],
            "applied_twice": stats.applied_twice,
            "redelivered": stats.redelivered,
            "resent": stats.resent,
            "reconnects": stats.reconnects,
            "errors": stats.errors,
            "sent_for": sent_for,
            "cpu": time.process_time() - cpu0,
        }

    async def stop(self) -> None:
        self.done.set()
        for t in self.receivers:
            t.cancel()
        await asyncio.gather(*self.receivers, return_exceptions=True)
        for pool in self.pools.values():
            for http in pool:
                http.close()
        for sock in self.sockets.values():
            await sock.close()


def client_main(index: int, pairs: int, env: dict[str, str], conn: Any) -> None:
    os.environ.update(env)
    world = build_world(pairs, offset=index * pairs)
    # The clients stand in for phones and browsers, one each: a full collection of a client
    # process (90-130 ms, both processes at once: they allocate alike) held up the frames
    # of 100 receivers, and was counted as the server's latency. So, as the servers do
    # (realtime/gc_policy.py): the world is frozen, the oldest generation is collected
    # between steps only, and young collections run as usual.
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, gc_policy.NEVER)
    asyncio.run(_client(world, conn))


async def _client(world: list[Pair], conn: Any) -> None:
    ports, inflight, http = await asyncio.to_thread(conn.recv)
    client = Client(world, ports, inflight, http)
    await client.start()
    conn.send("ready")
    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd[0] != "step":
            break
        conn.send(await client.step(*cmd[1:]))
        gc.collect()  # between steps: see client_main
    await client.stop()


# ============================================================== CPU per process group
def pg_sessions(db_name: str) -> int:
    """Sessions ever opened to this run's database (PostgreSQL 14+)."""
    import psycopg

    with psycopg.connect(os.environ["BENCH_PG_SERVER"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [db_name]
        ).fetchone()
    return int(row[0]) if row else 0


def pg_xacts(db_name: str) -> int:
    """Transactions committed or rolled back so far in this run's database (a statement in
    autocommit is one)."""
    import psycopg

    with psycopg.connect(os.environ["BENCH_PG_SERVER"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            [db_name],
        ).fetchone()
    return int(row[0]) if row else 0


def group_cpu(servers: list[Server], clients: list[Any], db_name: str) -> dict[str, float]:
    """CPU seconds so far of: the servers, the clients, the PostgreSQL server (its processes
    and the backends it has reaped: shared with other work, and a backend per connection
    comes and goes), the live backends of this run's database alone (not shared: the
    servers keep their connections, see "PG sessions opened/msg") and every redis-server
    (shared too)."""
    out = {"servers": 0.0, "clients": 0.0, "postgres": 0.0, "postgres_own": 0.0, "redis": 0.0}
    own = f" {db_name} ".encode()
    for s in servers:
        if s.process.poll() is None:
            out["servers"] += cpu_seconds(s.process.pid)
    for c in clients:
        if c.pid is not None and c.is_alive():
            out["clients"] += cpu_seconds(c.pid)
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0]
            if argv0.startswith(b"postgres") or argv0.endswith(b"bin/postgres"):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                # utime + stime, and cutime + cstime: the backends that already exited
                out["postgres"] += sum(int(f) for f in fields[11:15]) / tick
                if own in argv0:
                    out["postgres_own"] += sum(int(f) for f in fields[11:13]) / tick
            elif b"redis-server" in argv0:
                out["redis"] += cpu_seconds(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


# ============================================================== orchestration
HEADERS = [
    "rate offered/s",
    "procs",
    "sent",
    "delivered",
    "lost",
    "applied twice",
    "redelivered (deduped)",
    "resent (same txn)",
    "reconnects",
    "send errors",
    "rate reached/s",
    "p50 ms",
    "p99 ms",
    "p99 from schedule ms",
    "CPU % servers",
    "CPU % clients",
    "CPU % postgres (shared)",
    "CPU % redis (shared)",
    "server CPU ms/msg",
    "client CPU ms/msg",
    "postgres CPU ms/msg",
    "postgres CPU ms/msg (own backends)",
    "PG transactions/msg",
    "PG sessions opened/msg",
    "load 1/5/15",
]


def run_steps(args: argparse.Namespace, bench: Any, db_name: str) -> list[list[object]]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    servers = [start_server("uvicorn", bench.env) for _ in range(2)]
    conns, procs = [], []
    share = max(1, args.pairs // args.clients)
    try:
        for i in range(args.clients):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(i, share, bench.env, child), daemon=True)
            proc.start()
            conns.append(parent)
            procs.append(proc)
        for c in conns:
            c.send(([s.port for s in servers], args.inflight, args.http))
        for c in conns:
            assert c.recv() == "ready"
        rows = []
        for n, rate in enumerate(args.rates):
            kill = args.kill and n == len(args.rates) - 1
            start_at = time.time() + 1.0
            before = group_cpu(servers, procs, db_name)
            sessions0 = pg_sessions(db_name)
            xacts0 = pg_xacts(db_name)
            t0 = time.monotonic()
            print(f"  {rate:.0f}/s: starts in 1 s ({args.seconds:.0f} s)", flush=True)
            for c in conns:
                step = ("step", f"s{n}-", rate / args.clients, args.seconds, start_at, args.drain)
                c.send(step)
            dead_cpu = 0.0
            if kill:
                time.sleep(max(0.0, start_at + args.seconds / 2 - time.time()))
                dead_cpu = cpu_seconds(servers[1].process.pid)  # its share up to the kill
                os.kill(servers[1].process.pid, signal.SIGKILL)
                servers[1].process.wait()
            results = [c.recv() for c in conns]
            wall = time.monotonic() - t0
            if args.log_statements:
                print(f"  step {rate:.0f}/s: {start_at:.3f} .. {time.time():.3f}", flush=True)
            after = group_cpu(servers, procs, db_name)
            after["servers"] += dead_cpu
            after["pg_sessions"] = pg_sessions(db_name) - sessions0
            after["pg_xacts"] = pg_xacts(db_name) - xacts0
            rows.append(step_row(rate, results, before, after, wall, kill))
            errors: dict[str, int] = {}
            for r in results:
                for why, count in r["errors"].items():
                    errors[why] = errors.get(why, 0) + count
            if errors:
                print(f"  {rate:.0f}/s send errors and reconnects: {errors}", flush=True)
            print(f"  {rate:.0f}/s: p99 {rows[-1][12]:.1f} ms, lost {rows[-1][4]}", flush=True)
            if args.spikes:
                print_spikes(rate, results)
        for c in conns:
            c.send(("stop",))
        for p in procs:
            p.join(timeout=30)
        return rows
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for s in servers:
            if s.process.poll() is None:
                stop_server(s)


def print_spikes(rate: float, results: list[dict[str, Any]], bucket: float = 0.1) -> None:
    """Where the step's tail is: the messages over the p99, by the 100 ms of their send. A
    tail in a few buckets is stalls (a pause of some process); spread thin, it is queueing."""
    at = sorted(x for r in results for x in r["latency_at"])
    if not at:
        return
    p99 = percentile(sorted(lat for _, lat in at), 99)
    start = at[0][0]
    over: dict[int, list[float]] = defaultdict(list)
    for sent, lat in at:
        if lat > p99:
            over[int((sent - start) / bucket)].append(lat)
    print(
        f"  {rate:.0f}/s: {sum(map(len, over.values()))} messages over p99 {p99:.1f} ms, in "
        f"{len(over)} of {int((at[-1][0] - start) / bucket) + 1} buckets of {bucket * 1000:.0f} ms",
        flush=True,
    )
    for b, lats in sorted(over.items(), key=lambda kv: -len(kv[1]))[:8]:
        print(
            f"    t={b * bucket:5.1f} s: {len(lats):4d} over, max {max(lats):6.1f} ms", flush=True
        )


def step_row(
    rate: float,
    results: list[dict[str, Any]],
    before: dict[str, float],
    after: dict[str, float],
    wall: float,
    kill: bool,
) -> list[object]:
    def total(key: str) -> int:
        return sum(r[key] for r in results)

    lat = sorted(x for r in results for x in r["latency_sent"])
    lat_due = sorted(x for r in results for x in r["latency_due"])
    errors = sum(n for r in results for k, n in r["errors"].items() if "reconnect" not in k)
    sent_for = max(r["sent_for"] for r in results)
    cpu = {k: 100 * (after[k] - before[k]) / wall for k in before}
    sent = total("sent")
    per_msg = {k: 1000 * (after[k] - before[k]) / max(1, sent) for k in before}
    return [
        rate,
        "2, one killed" if kill else 2,
        total("sent"),
        total("delivered"),
        total("lost"),
        total("applied_twice"),
        total("redelivered"),
        total("resent"),
        total("reconnects"),
        errors,
        total("sent") / sent_for if sent_for else 0.0,
        percentile(lat, 50),
        percentile(lat, 99),
        percentile(lat_due, 99),
        cpu["servers"],
        cpu["clients"],
        cpu["postgres"],
        cpu["redis"],
        per_msg["servers"],
        per_msg["clients"],
        per_msg["postgres"],
        # The killed process's backends exit with it, and their CPU with them.
        "n/a (killed)" if kill else per_msg["postgres_own"],
        after["pg_xacts"] / max(1, sent),
        after["pg_sessions"] / max(1, sent),
        "/".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


def idle_rows(args: argparse.Namespace, bench: Any) -> list[list[object]]:
    """--idle sockets on a fresh uvicorn process, then on the bare server."""
    from benchmarks import idle_memory

    idle_memory.raise_nofile()
    cookies = idle_memory.make_users(args.idle)
    clients = idle_memory.Clients(2)
    measured = []
    try:
        for kind in ("uvicorn", "bare"):
            cmd = idle_memory.bare_command() if kind == "bare" else None
            server = start_server(kind, bench.env, cmd=cmd)
            try:
                measured.append(
                    idle_memory.measure(
                        "bare websockets" if kind == "bare" else "uvicorn",
                        server,
                        clients,
                        "/ws/messaging/",
                        cookies,
                        warmup=min(args.warmup, args.idle // 2),
                        hello=True,
                    )
                )
                clients.close_all()
            finally:
                stop_server(server)
    finally:
        clients.stop()
    return idle_memory.rows(measured, measured[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=200, help="sender -> receiver pairs")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--rates", default="1000", help="messages/s in total, one step each")
    parser.add_argument("--seconds", type=float, default=10.0, help="per step")
    parser.add_argument("--kill", action="store_true", help="kill -9 one process mid last step")
    parser.add_argument(
        "--drain",
        type=float,
        default=60.0,
        help="seconds a step waits for the last deliveries; later ones count as lost",
    )
    parser.add_argument("--idle", type=int, default=10_000, help="idle sockets (0: skip)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--spikes", action="store_true", help="where each step's tail is, by 100 ms of sending"
    )
    parser.add_argument(
        "--inflight", type=int, default=8, help="PUTs in flight per client process (cap, --http)"
    )
    parser.add_argument("--quick", action="store_true", help="20 pairs, 20/s for 6 s, 500 idle")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("DATABASE_URL", ""),
        help="a PostgreSQL server URL (default DATABASE_URL): the run creates a database of "
        "its own there and drops it after (SQLite's single writer serialises two processes)",
    )
    parser.add_argument(
        "--redis-url",
        default="",
        help="default: a Redis of the benchmark's own (var/redis-bench-<pid>.sock); a shared one "
        "may be flushed by other work, and the app then closes every socket to reconnect",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="send with PUT rooms/{id}/send (the old path) instead of send{} on the sender's "
        "own sync socket",
    )
    parser.add_argument(
        "--pool-max",
        default="",
        help="DJANGO_DB_POOL_MAX_SIZE for the servers (default: the settings' own)",
    )
    parser.add_argument(
        "--log-statements",
        action="store_true",
        help="log_statement = all for the run's database (to count statements per message "
        "from the PostgreSQL server's log; the step's start and end times are printed)",
    )
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.rates, args.seconds, args.idle = 20, "20", 6.0, 500
    args.rates = [float(r) for r in args.rates.split(",") if r]
    if not args.postgres.startswith("postgres"):
        raise SystemExit("set DATABASE_URL or --postgres to a PostgreSQL server")

    load_before = os.getloadavg()
    db_url, drop = own_database(args.postgres)
    db_name = db_url.rsplit("/", 1)[1]
    if args.log_statements:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{db_name}\" SET log_statement = 'all'")
    os.environ["BENCH_PG_SERVER"] = args.postgres
    bench = bench_env(db_url, args.redis_url)
    bench.env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    if args.pool_max:
        bench.env["DJANGO_DB_POOL_MAX_SIZE"] = args.pool_max
    # Throughput, not the per-user socket rate limit (20 frames/s): a sender at 25 messages/s
    # sends 25 frames and acks as many ticks.
    bench.env.setdefault("WS_RATE_CAPACITY", "10000")
    bench.env.setdefault("WS_RATE_REFILL_PER_SECOND", "10000")
    try:
        migrate(bench)
        bench.apply()
        import django

        django.setup()
        print(f"messaging {bench.run_id}: {args.pairs} pairs, rates {args.rates}", flush=True)
        steps = run_steps(args, bench, db_name)
        idle = idle_rows(args, bench) if args.idle else []
    finally:
        cleanup(bench)
        drop()
    print()
    print(
        table(
            f"CallsApp send -> deliver, {args.pairs} pairs over 2 uvicorn processes, "
            f"{args.clients} client processes, {args.seconds:.0f} s a step"
            + (", the second process killed (-9) mid last step" if args.kill else "")
            + (", sent by HTTP PUT" if args.http else ", sent on the sender's socket")
            + (f", DJANGO_DB_POOL_MAX_SIZE={args.pool_max}" if args.pool_max else ""),
            HEADERS,
            steps,
        )
    )
    print(
        "latency: receive - send start (p50, p99), and receive - scheduled instant (p99 from "
        "schedule: counts the clients' own lag); target p99 <= 50 ms at 1,000/s, zero lost"
    )
    if idle:
        from benchmarks import idle_memory

        print()
        print(
            table(
                f"Memory per idle /ws/messaging/ socket, {args.idle:,} open, one process each",
                idle_memory.HEADERS,
                idle,
            )
        )
        print("target <= 30 KiB per connection (CallsApp), <= 2x the bare server (issue 16)")
    after = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
        f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} (1/5/15 min)"
    )


def own_database(server_url: str) -> tuple[str, Any]:
    import psycopg

    name = f"bench_messaging_{time.time_ns()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = server_url.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


if __name__ == "__main__":
    main()
