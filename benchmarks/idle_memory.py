"""Memory per idle socket: each product's WebSocket against a bare `websockets` server.

For each product socket (CBLINE `/ws/cbline/`, video chat `/ws/videochat/`, CallsApp
`/ws/messaging/`) one uvicorn process of the real app (`config.asgi:application`,
`--ws websockets-sansio --ws-per-message-deflate false`, PostgreSQL, Redis) is started;
`--clients` (2) client processes open `--warmup` (200) authenticated sockets, wait until
the server is idle and read its memory, then open the rest up to `--sockets` (10,000), wait
again and read it again: (after - before) / (sockets - warmup) is the memory per idle
socket. Memory is the process's VmRSS and its Pss (/proc/<pid>/smaps_rollup). The same is
done against a bare `websockets` server (one process, no Django, no auth, no Redis: it
reads the cookie, answers CallsApp's hello with one frame and otherwise idles), and each
row's ratio to it is printed. Target (issue 16): <= 2x the bare server.

The clients offer permessage-deflate the way browsers do; the table shows what the server
agreed to (nothing, with the flag). A socket counts as open when the handshake is done and,
for CallsApp, once it said `hello{last_seq: 0}` and got `caught_up` back: a real client's
first steps. The clients answer the servers' pings, so sockets stay up however long the
run takes.

    .venv/bin/python benchmarks/idle_memory.py --quick           # 1,000 sockets, smoke
    .venv/bin/python benchmarks/idle_memory.py                   # 10,000 per product
    .venv/bin/python benchmarks/idle_memory.py --products messaging --profile 25
        # tracemalloc in the server: the 25 biggest allocation sites the sockets added

`measure()` is also what benchmarks/messaging.py uses for its idle-socket row.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    VAR,
    Server,
    bench_env,
    cleanup,
    cpu_seconds,
    migrate,
    sessions_with_devices,
    start_server,
    stop_server,
    table,
)

TARGET_RATIO = 2.0
PATHS = {"cbline": "/ws/cbline/", "videochat": "/ws/videochat/", "messaging": "/ws/messaging/"}
HELLO = json.dumps({"type": "hello", "last_seq": 0}).encode()
# What a browser offers; the server under test must refuse it (--ws-per-message-deflate false).
OFFER = "permessage-deflate; client_max_window_bits"


# ============================================================== client process
class IdleSocket(asyncio.Protocol):
    """An RFC 6455 client that opens, says hello if asked, then only answers pings."""

    def __init__(self, host: str, path: str, cookie: str, hello: bool) -> None:
        self.host, self.path, self.cookie, self.hello = host, path, cookie, hello
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[str] = loop.create_future()  # the agreed extensions
        self.extensions = ""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Extensions: {OFFER}\r\n"
            f"Origin: http://{self.host}\r\nCookie: sessionid={self.cookie}\r\n\r\n".encode()
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
            head = bytes(buf[:end]).decode(errors="replace")
            if not head.startswith("HTTP/1.1 101"):
                self.fail("handshake " + head[:12])
                return
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions":
                    self.extensions = value.strip()
            del buf[: end + 4]
            self.upgraded = True
            if self.hello:
                self.send_frame(1, HELLO)
            elif not self.ready.done():
                self.ready.set_result(self.extensions)
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
            if opcode == 1 and not self.ready.done():  # later frames: nothing to do
                text = bytes(buf[start : start + n])
                if b'"caught_up"' in text:
                    self.ready.set_result(self.extensions)
                elif b'"error"' in text:
                    self.fail(text[:120].decode(errors="replace"))
            elif opcode == 9:
                self.send_frame(10, bytes(buf[start : start + n]))
            elif opcode == 8:
                self.fail("closed by server")
            pos = start + n
        del buf[:pos]

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail("connection lost")

    @property
    def alive(self) -> bool:
        return self.ready.done() and not self.ready.exception() and not self.closed

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send_frame(8, (1000).to_bytes(2, "big"))
            self.transport.close()


def client_main(conn: Any) -> None:
    """A client process: ("open", port, path, cookies, hello) opens sockets and answers
    {"open": n, "failed": {why: n}, "extensions": {...}, "cpu": s}; ("close",) closes all."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_client(conn))


async def _client(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    socks: list[IdleSocket] = []
    gate = asyncio.Semaphore(100)  # handshakes in flight per client process

    async def one(port: int, path: str, cookie: str, hello: bool) -> str:
        async with gate:
            try:
                _, sock = await loop.create_connection(
                    lambda: IdleSocket(f"127.0.0.1:{port}", path, cookie, hello),
                    "127.0.0.1",
                    port,
                )
                socks.append(sock)
                ext = await asyncio.wait_for(sock.ready, 300)
                return "ok " + (ext or "-")
            except Exception as exc:  # counted and shown: the run goes on to report
                return f"{type(exc).__name__}: {exc}"[:100]

    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd[0] == "open":
            _, port, path, cookies, hello = cmd
            cpu0 = time.process_time()
            outcomes = Counter(await asyncio.gather(*(one(port, path, c, hello) for c in cookies)))
            ok = {k[3:]: v for k, v in outcomes.items() if k.startswith("ok ")}
            failed = {k: v for k, v in outcomes.items() if not k.startswith("ok ")}
            conn.send(
                {
                    "open": sum(ok.values()),
                    "failed": failed,
                    "extensions": ok,
                    "cpu": time.process_time() - cpu0,
                }
            )
        elif cmd[0] == "count":
            conn.send(sum(1 for s in socks if s.alive))
        elif cmd[0] == "close":
            for sock in socks:
                sock.close()
            socks.clear()
            await asyncio.sleep(0.5)
            conn.send({"closed": True})
        else:
            return


class Clients:
    """`n` client processes, each holding its share of the sockets."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def open(self, port: int, path: str, cookies: list[str], hello: bool) -> dict[str, Any]:
        shares = [cookies[i :: len(self.conns)] for i in range(len(self.conns))]
        for conn, share in zip(self.conns, shares, strict=True):
            conn.send(("open", port, path, share, hello))
        total: dict[str, Any] = {"open": 0, "failed": Counter(), "extensions": Counter()}
        total["cpu"] = 0.0
        for conn in self.conns:
            r = conn.recv()
            total["open"] += r["open"]
            total["failed"].update(r["failed"])
            total["extensions"].update(r["extensions"])
            total["cpu"] += r["cpu"]
        return total

    def alive(self) -> int:
        """Sockets open right now (the server may have closed some since they opened)."""
        for conn in self.conns:
            conn.send(("count",))
        return sum(conn.recv() for conn in self.conns)

    def close_all(self) -> None:
        for conn in self.conns:
            conn.send(("close",))
        for conn in self.conns:
            conn.recv()

    def stop(self) -> None:
        for conn in self.conns:
            conn.send(("exit",))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.exitcode is None:
                proc.kill()


# ============================================================== measuring
def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of a process in KiB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def wait_idle(pid: int, *, below: float = 0.05, window: float = 3.0, limit: float = 180.0) -> float:
    """Wait until the process used under `below` of a core over `window` seconds (connect
    work, liveness writes and presence done); returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        cpu0 = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - cpu0) / window < below:
            break
    return time.monotonic() - start


@dataclass
class Measured:
    label: str
    path: str
    sockets: int  # open at the end
    closed: int  # opened, then closed by the server before the end
    failed: dict[str, int]
    extensions: str
    before: tuple[int, int]
    after: tuple[int, int]
    added: int  # sockets opened between the two readings
    open_seconds: float
    server_cpu: float
    load: tuple[float, float, float]

    @property
    def rss_per_socket(self) -> float:
        return (self.after[0] - self.before[0]) / max(1, self.added)

    @property
    def pss_per_socket(self) -> float:
        return (self.after[1] - self.before[1]) / max(1, self.added)


def measure(
    label: str,
    server: Server,
    clients: Clients,
    path: str,
    cookies: list[str],
    *,
    warmup: int,
    hello: bool,
    snapshot: Any = None,
) -> Measured:
    """Open `warmup` sockets, read the server's memory, open the rest, read it again. The
    sockets stay open; `clients.close_all()` closes them."""
    pid = server.process.pid
    first = clients.open(server.port, path, cookies[:warmup], hello)
    wait_idle(pid)
    alive_before = clients.alive()
    before = memory_kib(pid)
    if snapshot is not None:
        snapshot("before")
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    rest = clients.open(server.port, path, cookies[warmup:], hello)
    open_seconds = time.monotonic() - t0
    wait_idle(pid)
    server_cpu = cpu_seconds(pid) - cpu0
    after = memory_kib(pid)
    alive_after = clients.alive()
    if snapshot is not None:
        snapshot("after")
    failed = Counter(first["failed"]) + Counter(rest["failed"])
    ext = Counter(first["extensions"]) + Counter(rest["extensions"])
    return Measured(
        label=label,
        path=path,
        sockets=alive_after,
        closed=first["open"] + rest["open"] - alive_after,
        failed=dict(failed),
        extensions=", ".join(f"{k} x{v}" for k, v in ext.items()),
        before=before,
        after=after,
        added=alive_after - alive_before,
        open_seconds=open_seconds,
        server_cpu=server_cpu,
        load=os.getloadavg(),
    )


HEADERS = [
    "server",
    "socket",
    "open",
    "failed",
    "closed by server",
    "extensions agreed",
    "RSS before MiB",
    "RSS after MiB",
    "KiB/socket (RSS)",
    "KiB/socket (Pss)",
    "x bare (RSS)",
    "open s",
    "server CPU ms/socket",
    "load 1/5/15",
]


def rows(results: list[Measured], bare: Measured | None) -> list[list[object]]:
    out: list[list[object]] = []
    for m in results:
        ratio = m.rss_per_socket / bare.rss_per_socket if bare and bare.rss_per_socket else None
        out.append(
            [
                m.label,
                m.path,
                m.sockets,
                sum(m.failed.values()),
                m.closed,
                m.extensions.replace("- x", "none x"),
                m.before[0] / 1024,
                m.after[0] / 1024,
                m.rss_per_socket,
                m.pss_per_socket,
                "-" if ratio is None else f"{ratio:.2f}",
                m.open_seconds,
                1000 * m.server_cpu / max(1, m.added),
                "/".join(f"{x:.2f}" for x in m.load),
            ]
        )
    return out


# ============================================================== bare server
async def bare_main(port: int) -> None:
    """The anchor: the `websockets` library alone, the same handshake (the cookie is read),
    CallsApp's hello answered with one frame, nothing else; no compression."""
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        ws.request.headers.get("Cookie")
        async for msg in ws:
            if isinstance(msg, str) and '"hello"' in msg:
                await ws.send('{"type":"caught_up","seq":0}')

    async with serve(handler, "127.0.0.1", port, compression=None):
        await asyncio.Future()


def traced_server(port: int) -> None:
    """uvicorn whose first SIGUSR1 starts tracemalloc (after start-up: tracing the imports
    made start-up too slow on a loaded machine) and each writes a snapshot to
    $TRACE_SNAPSHOT; the warm-up sockets are open by then, so the second snapshot holds
    what the measured sockets added."""
    import tracemalloc

    import uvicorn

    def dump(*_: Any) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("TRACE_FRAMES", "1")))
        tracemalloc.take_snapshot().dump(os.environ["TRACE_SNAPSHOT"])
        Path(os.environ["TRACE_SNAPSHOT"] + ".done").touch()

    signal.signal(signal.SIGUSR1, dump)
    uvicorn.run(
        "config.asgi:application",
        host="127.0.0.1",
        port=port,
        ws="realtime.wsprotocol:LeanWebSocketProtocol",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
    )


def snapshot_taker(server: Server, tag: str) -> Any:
    def take(name: str) -> None:
        out = VAR / f"trace-{tag}"  # where the server writes (TRACE_SNAPSHOT)
        done = Path(str(out) + ".done")
        done.unlink(missing_ok=True)
        os.kill(server.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        done.unlink(missing_ok=True)
        out.rename(VAR / f"trace-{tag}-{name}")

    return take


def print_profile(tag: str, top: int, added: int) -> None:
    import tracemalloc

    before = tracemalloc.Snapshot.load(str(VAR / f"trace-{tag}-before"))
    after = tracemalloc.Snapshot.load(str(VAR / f"trace-{tag}-after"))
    stats = after.compare_to(before, "traceback" if os.environ.get("TRACE_FRAMES") else "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"tracemalloc: {total / 1024 / max(1, added):.1f} KiB/socket traced by Python")
    for s in stats[:top]:
        where = s.traceback.format()[-1].strip() if s.traceback else "?"
        if len(s.traceback) > 1:
            where = " <- ".join(
                f"{Path(f.filename).name}:{f.lineno}" for f in reversed(list(s.traceback)[-6:])
            )
        print(
            f"  {s.size_diff / 1024 / max(1, added):7.2f} KiB/socket "
            f"{s.count_diff / max(1, added):6.1f} blocks/socket  {where}"
        )
    if len(stats) and len(stats[0].traceback) > 1:
        print("by owner (the innermost frame outside the standard library):")
        owners: Counter[str] = Counter()
        for s in stats:
            owners[owner_of(s.traceback)] += s.size_diff
        for name, size in owners.most_common(top):
            print(f"  {size / 1024 / max(1, added):7.2f} KiB/socket  {name}")
    for name in ("before", "after"):
        (VAR / f"trace-{tag}-{name}").unlink(missing_ok=True)


def owner_of(traceback: Any) -> str:
    """Who made an allocation: the package (or our module) of the innermost frame that is
    not the standard library; "stdlib" when every frame is."""
    root = str(Path(__file__).resolve().parent.parent)
    for frame in reversed(list(traceback)):
        name = frame.filename
        if "site-packages/" in name:
            return name.split("site-packages/", 1)[1].split("/", 1)[0]
        if name.startswith(root) and "/benchmarks/" not in name:
            return "ours: " + name[len(root) + 1 :]
    return "stdlib (" + Path(list(traceback)[-1].filename).name + ")"


# ============================================================== fixtures
def make_users(count: int) -> list[str]:
    """Users with a profile (adult: video chat needs it), a login session and its device,
    bulk-written; returns the session cookies. Call after django.setup()."""
    from accounts.models import Profile, User

    tag = os.environ["REDIS_KEY_PREFIX"].rstrip(":")
    User.objects.bulk_create(
        [User(email=f"{tag}-{i}@example.com", password="!bench") for i in range(count)],
        batch_size=1000,
    )
    people = list(User.objects.filter(email__startswith=f"{tag}-").order_by("pk"))
    Profile.objects.bulk_create(
        [Profile(user=u, nickname=f"i{u.pk}", birth_date=dt.date(1990, 1, 1)) for u in people],
        batch_size=1000,
    )
    return sessions_with_devices(people)


def raise_nofile() -> None:
    """Servers and clients inherit this: 10,000 sockets need more than the usual 1,024."""
    want = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bare_command() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--bare-server"]


def main() -> None:
    from benchmarks.reconnect_storm import drop_database, own_database

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--products", default="cbline,videochat,messaging")
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--profile", type=int, default=0, help="tracemalloc: show the top N sites")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    ap.add_argument(
        "--redis-url",
        default="",
        help="default: a Redis of the benchmark's own (var/redis-bench-<pid>.sock); a shared one "
        "may be flushed by other work, and the app then closes every socket to reconnect",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 sockets: a smoke run")
    ap.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--traced-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server:
        asyncio.run(bare_main(args.bare_server))
        return
    if args.traced_server:
        traced_server(args.traced_server)
        return
    if args.quick:
        args.sockets = 1000
    if not args.database_url.startswith("postgres"):
        raise SystemExit("set DATABASE_URL or --database-url to a PostgreSQL server")
    raise_nofile()

    load_before = os.getloadavg()
    run_db = own_database(args.database_url)
    bench = bench_env(run_db, args.redis_url)
    bench.apply()
    print(f"idle {bench.run_id}: migrating, {args.sockets} users", flush=True)
    migrate(bench)
    import django

    django.setup()
    cookies = make_users(args.sockets)
    products = [p for p in args.products.split(",") if p]
    results: list[Measured] = []
    bare: Measured | None = None
    clients = Clients(args.clients)
    try:
        for kind in [*products, *([] if args.no_bare else ["bare"])]:
            path = PATHS.get(kind, "/ws/messaging/")
            env = dict(bench.env)
            cmd = None
            if kind == "bare":
                cmd = bare_command()
            elif args.profile:
                env["TRACE_SNAPSHOT"] = str(VAR / f"trace-{bench.run_id}-{kind}")
                cmd = [sys.executable, str(Path(__file__).resolve()), "--traced-server"]
            server = start_server("bare" if kind == "bare" else "uvicorn", env, cmd=cmd)
            tag = f"{bench.run_id}-{kind}"
            traced = snapshot_taker(server, tag)  # the same name as TRACE_SNAPSHOT
            try:
                m = measure(
                    "bare websockets" if kind == "bare" else "uvicorn",
                    server,
                    clients,
                    path,
                    cookies,
                    warmup=args.warmup,
                    hello=kind in ("messaging", "bare"),
                    snapshot=traced if args.profile and kind != "bare" else None,
                )
                clients.close_all()
            finally:
                stop_server(server)
            print(
                f"  {kind}: {m.sockets} open, {m.rss_per_socket:.1f} KiB/socket (RSS), "
                f"failed {m.failed or 0}, closed by the server {m.closed}",
                flush=True,
            )
            if args.profile and kind != "bare":
                print_profile(tag, args.profile, m.added)
            if kind == "bare":
                bare = m
            else:
                results.append(m)
    finally:
        clients.stop()
        cleanup(bench)
        drop_database(args.database_url, run_db)
    print()
    print(
        table(
            f"Memory per idle socket: {args.sockets:,} open per server, one process each, "
            "clients offer permessage-deflate (browsers do)",
            HEADERS,
            rows([*results, *([bare] if bare else [])], bare),
        )
    )
    if bare is not None:
        for m in results:
            ratio = m.rss_per_socket / bare.rss_per_socket
            clean = not m.failed and not m.closed
            verdict = "met" if ratio <= TARGET_RATIO and clean else "NOT met"
            print(
                f"{m.path}: {m.rss_per_socket:.1f} KiB/socket = {ratio:.2f} x bare "
                f"({bare.rss_per_socket:.1f} KiB); target <= {TARGET_RATIO:.0f}x: {verdict}"
            )
    after = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
        f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} (1/5/15 min)"
    )


if __name__ == "__main__":
    main()
