"""CallsApp delivery: send-to-deliver latency over two uvicorn processes, with real Olm and
Megolm payloads from Python vodozemac devices, and a kill -9 of one process mid-run.

Each pair (A -> B) shares a direct room. A's Megolm session key reaches B over the server as
an Olm to-device message (claimed one-time key, real ciphertext). Then senders PUT
`rooms/{id}/send/m.room.encrypted/{txn}` at `--rate` messages/s in total, each pair's sender
on one of the two processes; each receiver B holds `/ws/messaging/` on a process, decrypts
every timeline event with its inbound Megolm session, records `now - sent_at` (the send
time is inside the ciphertext), and acks. With `--kill`, the second process gets SIGKILL at
half time: its receivers reconnect to the survivor with `hello{last acked seq}`, its senders
resend the request in flight with the same txnId (applied once by the server).

Reported: sent, delivered (distinct), lost, frames delivered again after the reconnect
(the client dedupes them by event id), latency p50/p99, and the rate reached.

    python benchmarks/messaging.py --pairs 20 --rate 100 --seconds 5 --kill   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Server,
    bench_env,
    cleanup,
    migrate,
    percentile,
    start_server,
    stop_server,
    table,
)

CSRF = "b" * 32  # a CSRF secret of our own: cookie and header must agree


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
    server: int  # index of the process both ends start on


@dataclass
class Stats:
    sent_at: dict[str, float] = field(default_factory=dict)  # txn -> send time
    delivered: dict[str, float] = field(default_factory=dict)  # txn -> latency ms
    redelivered: int = 0
    applied_twice: int = 0  # one txn stored as two events: the idempotency key failed
    event_of: dict[str, str] = field(default_factory=dict)  # txn -> event id
    resent: int = 0
    reconnects: int = 0


def build_world(pairs: int) -> list[Pair]:
    """Users, login sessions with issued devices, uploaded keys, direct rooms and the room
    keys sent over Olm, written through the app's own services."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User
    from accounts.selectors import DEVICE_SESSION_KEY
    from accounts.services import device_issue
    from messaging.ids import mxid
    from messaging.schemas import DeviceKeysBody
    from messaging.services import keys_claim, keys_upload, room_create, to_device_send
    from tests.messaging.olm import OlmDevice

    def person(n: int) -> tuple[Person, Any]:
        user = User.objects.create_user(email=f"bench{n}-{time.time_ns()}@example.com")
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
        world.append(Pair(a, b, room.room_id, group, i % 2))
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


async def receive(
    pair: Pair,
    servers: list[Server],
    alive: list[bool],
    stats: Stats,
    ready: asyncio.Event,
    done: asyncio.Event,
) -> None:
    from websockets.asyncio.client import connect

    b = pair.receiver
    server = pair.server
    acked = 0
    seen: set[str] = set()
    first = True
    while not done.is_set():
        if not alive[server]:
            server = alive.index(True)
        port = servers[server].port
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/ws/messaging/",
                additional_headers={
                    "Cookie": f"sessionid={b.session_key}",
                    "Origin": f"http://127.0.0.1:{port}",
                },
                compression=None,
                max_size=2**22,
            ) as ws:
                await ws.send(json.dumps({"type": "hello", "last_seq": acked}))
                if first:
                    ready.set()
                    first = False
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame.get("type") != "sync":
                        continue
                    sync = frame["sync"]
                    for event in sync.get("to_device", {}).get("events", []):
                        b.olm.accept_room_key(b.olm.olm_decrypt(event["content"]))
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
                            txn, sent = body["txn"], body["sent_at"]
                            if (
                                stats.event_of.setdefault(txn, event["event_id"])
                                != event["event_id"]
                            ):
                                stats.applied_twice += 1
                                continue
                            stats.delivered[txn] = (time.time() - sent) * 1000
                    if frame.get("seq"):
                        acked = frame["seq"]
                        await ws.send(json.dumps({"type": "ack", "seq": acked}))
        except (OSError, Exception):  # the process was killed: go to the survivor
            stats.reconnects += 1
            await asyncio.sleep(0.05)


async def send_all(
    world: list[Pair],
    servers: list[Server],
    alive: list[bool],
    stats: Stats,
    rate: float,
    seconds: float,
    kill_at: float | None,
) -> float:
    conns = {id(p): Http(servers[p.server].port, p.sender.session_key) for p in world}
    total = int(rate * seconds)
    start = time.monotonic()
    killed = False

    async def one(n: int) -> None:
        pair = world[n % len(world)]
        txn = f"m{n}"
        http = conns[id(pair)]
        while True:
            stats.sent_at[txn] = time.time()
            plaintext_body = json.dumps({"txn": txn, "sent_at": stats.sent_at[txn]})
            content = pair.sender.olm.megolm_encrypt(pair.group, pair.room_id, plaintext_body)
            # The body travels inside the Megolm ciphertext: megolm_encrypt wraps it as the
            # m.text body; the receiver reads it back from there.
            try:
                status, answer = await http.put(
                    f"/messaging/_matrix/client/v3/rooms/{pair.room_id}/send/m.room.encrypted/{txn}",
                    json.dumps(content).encode(),
                )
                if status != 200:
                    raise RuntimeError(f"{status} {answer[:200]!r}")
                return
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                # The process died under us: resend to the survivor with the same txnId.
                http.close()
                http.port = servers[alive.index(True)].port
                stats.resent += 1

    tasks = []
    for n in range(total):
        due = start + n / rate
        if kill_at is not None and not killed and time.monotonic() - start >= kill_at:
            os.kill(servers[1].process.pid, signal.SIGKILL)
            alive[1] = False
            killed = True
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return time.monotonic() - start


async def run(world: list[Pair], servers: list[Server], args: argparse.Namespace) -> Stats:
    stats = Stats()
    alive = [True, True]
    done = asyncio.Event()
    readies = [asyncio.Event() for _ in world]
    receivers = [
        asyncio.create_task(receive(p, servers, alive, stats, r, done))
        for p, r in zip(world, readies, strict=True)
    ]
    for r in readies:
        await r.wait()
    kill_at = args.seconds / 2 if args.kill else None
    elapsed = await send_all(world, servers, alive, stats, args.rate, args.seconds, kill_at)
    stats.elapsed = elapsed  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    while len(stats.delivered) < len(stats.sent_at) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    done.set()
    for t in receivers:
        t.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s in total")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kill", action="store_true", help="kill -9 one process at half time")
    parser.add_argument(
        "--postgres",
        default="",
        help="a PostgreSQL server URL: the run creates a database of its own there and drops "
        "it after (SQLite's single writer serialises two processes' sends)",
    )
    args = parser.parse_args()

    db_url, drop = own_database(args.postgres) if args.postgres else ("", None)
    bench = bench_env(db_url, os.environ.get("BENCH_REDIS_URL", ""))
    bench.env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    servers: list[Server] = []
    try:
        migrate(bench)
        bench.apply()
        world = build_world(args.pairs)
        servers = [start_server("uvicorn", bench.env) for _ in range(2)]
        stats = asyncio.run(run(world, servers, args))
        latencies = sorted(stats.delivered.values())
        lost = len(stats.sent_at) - len(stats.delivered)
        print(
            table(
                f"CallsApp send -> deliver, {args.pairs} pairs over 2 uvicorn processes"
                + (", one killed (-9) at half time" if args.kill else ""),
                [
                    "sent",
                    "delivered",
                    "lost",
                    "applied twice",
                    "redelivered (deduped)",
                    "resent (same txn)",
                    "reconnects",
                    "rate/s",
                    "p50 ms",
                    "p99 ms",
                ],
                [
                    [
                        len(stats.sent_at),
                        len(stats.delivered),
                        lost,
                        stats.applied_twice,
                        stats.redelivered,
                        stats.resent,
                        stats.reconnects,
                        len(stats.sent_at) / stats.elapsed,  # type: ignore[attr-defined]
                        percentile(latencies, 50),
                        percentile(latencies, 99),
                    ]
                ],
            )
        )
    finally:
        for s in servers:
            if s.process.poll() is None:
                stop_server(s)
        cleanup(bench)
        if drop is not None:
            drop()


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
