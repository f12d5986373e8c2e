"""Video chat matchmaking under load, in two modes (benchmarks/README.md).

--mode e2e (the default): real WebSocket clients through /ws/videochat/ on two uvicorn
processes (PostgreSQL, Redis), users who pass the product's rules, arrivals as queue.join at
their scheduled instants, match.found timed on both sides, the violations replayed from the
clients' frames (bans included); then the direct mode at the same rates for comparison.
See the "End-to-end mode" section below.

--mode direct: arrivals from two OS processes against one Redis, described here.

Each worker process is what an ASGI process is to matchmaking: it calls the async interface
of `videochat.matchmaking` (redis.asyncio, one Lua step per operation) from its event loop.
Simulated users arrive at a fixed total rate split over the two processes, with a mix of
attributes and filters; a user matched at arrival chats for a while and then presses "next"
(skip) or "stop"; a user who finds nobody waits, is told of a match through its process's
inbox list (standing in for the channel layer), and leaves (dequeue) after --leave-after
seconds without one. Users come back after a pause, so the same people meet again and the
skip rule is exercised. Before the run, --waiting users nobody can match are put in line.

Times to match are measured from each arrival's scheduled instant, not from when the client
got round to calling (which would hide any backlog: coordinated omission).

Every operation is logged with the client's monotonic clock (one clock for all processes on
Linux); after the run the logs are merged and replayed to count violations: self-match,
double match (a user paired while already paired), filter broken (either side's wanted
gender/country not met), re-pair within the skip TTL. The replay orders each end of a chat at
the moment it was called and each match at the moment its reply came back, so an overlap of
the two never counts as a violation that did not happen.

    .venv/bin/python benchmarks/matchmaking.py --rates 1000,300,100 --seconds 10 --users 2000
    .venv/bin/python benchmarks/matchmaking.py --mode direct --quick
    .venv/bin/python benchmarks/matchmaking.py --mode direct --rate 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import VAR, bench_env, cleanup, percentile, table

PROCESSES = 2
P99_TARGET_MS = 100.0
USERS_PER_PROCESS = 6000
UID_BLOCK = 1_000_000  # user ids of process i are i * UID_BLOCK + n
SKIP_SHARE = 0.6  # chats ended with "next" (skip) rather than "stop"
IN_FLIGHT = 256  # Redis calls in flight per process

# The mix: gender of the user, wanted gender, country, wanted country (weights).
GENDERS = (["m", "f", "x", ""], [60, 30, 3, 7])
COUNTRIES = (
    ["US", "IN", "BR", "RU", "DE", "FR", "GB", "TR", ""],
    [25, 12, 10, 10, 10, 8, 8, 7, 10],
)
WANT_COUNTRY = (
    [None, "US", "IN", "BR", "RU", "DE", "FR", "GB", "TR"],
    [85, 4, 2, 2, 2, 1, 1, 2, 1],
)
# Pre-filled users want countries that no arriving user is from.
ABSENT_COUNTRIES = ["IS", "LI", "MC", "SM", "AD", "VA"]


def seeker_for(uid: int) -> Any:
    """Attributes and filters of user `uid`: fixed per user, so the replay can rebuild them."""
    from videochat.matchmaking import Seeker

    rnd = random.Random(uid)
    gender = rnd.choices(*GENDERS)[0]
    # Men ask for women far more often than the reverse: the realistic source of waiting.
    want_gender = rnd.choices(["f", "m", None], [45, 5, 50] if gender == "m" else [5, 20, 75])[0]
    return Seeker(
        uid,
        f"bench.p{uid // UID_BLOCK}!{uid}",
        gender,
        rnd.choices(*COUNTRIES)[0],
        want_gender,
        rnd.choices(*WANT_COUNTRY)[0],
    )


def compatible(a: Any, b: Any) -> bool:
    def accepts(x: Any, y: Any) -> bool:
        return (x.want_gender is None or x.want_gender == y.gender) and (
            x.want_country is None or x.want_country == y.country
        )

    return accepts(a, b) and accepts(b, a)


@dataclass
class WorkerConfig:
    index: int
    rate: float  # this process's arrivals per second
    seconds: float
    leave_after: float
    chat_mean: float
    log_path: str


# --- Worker process -------------------------------------------------------------------------
def worker_main(cfg: WorkerConfig, ready: Any, start_at: Any) -> None:
    import django

    django.setup()
    asyncio.run(Worker(cfg).run(ready, start_at))


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        from realtime.keys import key

        self.cfg = cfg
        self.rnd = random.Random(1000 + cfg.index)
        self.inbox_key = lambda i: key("bench", "inbox", i)
        self.idle = [cfg.index * UID_BLOCK + n for n in range(1, USERS_PER_PROCESS + 1)]
        self.mailboxes: dict[int, asyncio.Queue[tuple[str, str]]] = {}
        self.log: list[list[Any]] = []
        self.seekers = {uid: seeker_for(uid) for uid in self.idle}
        self.in_flight = asyncio.Semaphore(IN_FLIGHT)
        self.no_idle_user = 0
        self.stopping = False

    async def run(self, ready: Any, start_at: Any) -> None:
        from realtime.redis import get_async_redis
        from videochat import matchmaking as mm

        self.r, self.mm = get_async_redis(), mm
        # Warm up (imports, the script, a pool of connections) before the clock starts, so
        # that a slow process start does not become a burst of late arrivals.
        await asyncio.gather(*(mm.partner_of(0) for _ in range(64)))
        await asyncio.to_thread(ready.wait)  # everyone is set up ...
        await asyncio.to_thread(ready.wait)  # ... and the start time is written
        cpu0 = time.process_time()
        reader = asyncio.create_task(self.read_inbox())
        sessions: set[asyncio.Task[None]] = set()
        total = int(self.cfg.rate * self.cfg.seconds)
        # Offset so the two processes' arrivals interleave instead of coinciding.
        start = start_at.value + self.cfg.index / (self.cfg.rate * PROCESSES)
        for k in range(total):
            scheduled = start + k / self.cfg.rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.idle:
                self.no_idle_user += 1
                continue
            i = self.rnd.randrange(len(self.idle))
            self.idle[i], self.idle[-1] = self.idle[-1], self.idle[i]
            task = asyncio.create_task(self.session(self.idle.pop(), scheduled))
            sessions.add(task)
            task.add_done_callback(sessions.discard)
        self.log.append(["done", self.cfg.index, time.monotonic(), self.no_idle_user])
        while sessions:
            await asyncio.gather(*list(sessions))
        self.stopping = True
        await reader
        self.log.append(["cpu", self.cfg.index, time.process_time() - cpu0])
        Path(self.cfg.log_path).write_text("\n".join(json.dumps(e) for e in self.log))

    async def read_inbox(self) -> None:
        """This process's notifications (what the channel layer carries in production)."""
        while not self.stopping:
            inbox = self.inbox_key(self.cfg.index)
            item = await self.r.blpop([inbox], timeout=0.2)
            if item is None:
                continue
            # Drain what else is there in one call rather than one BLPOP per message.
            for raw in [item[1], *(await self.r.lpop(inbox, 500) or [])]:
                kind, uid, match_id = raw.decode().split(" ")
                box = self.mailboxes.get(int(uid))
                if box is not None:
                    box.put_nowait((kind, match_id))

    async def notify(self, uid: int, kind: str, match_id: str) -> None:
        async with self.in_flight:
            await self.r.rpush(self.inbox_key(uid // UID_BLOCK), f"{kind} {uid} {match_id}")

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One matchmaking call. In-flight calls are bounded below the connection pool's cap
        (redis.asyncio refuses rather than waits past it); time spent waiting here counts
        in the times measured, as a backlog in an ASGI process would."""
        async with self.in_flight:
            return await fn(*args, **kwargs)

    async def session(self, uid: int, scheduled: float) -> None:
        box: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.mailboxes[uid] = box
        try:
            await self.arrive(uid, box, scheduled)
        except Exception as exc:  # counted and shown: a benchmark must finish to report
            self.log.append(["X", uid, time.monotonic(), type(exc).__name__])
            with contextlib.suppress(Exception):
                await self.call(self.mm.dequeue, uid)
                await self.call(self.mm.end_match, uid, skip=False)
        del self.mailboxes[uid]
        await asyncio.sleep(self.rnd.uniform(0.2, 1.5))  # a pause before coming back
        self.idle.append(uid)

    async def arrive(self, uid: int, box: asyncio.Queue[tuple[str, str]], scheduled: float) -> None:
        mm, seeker = self.mm, self.seekers[uid]
        # Timed from the arrival's place in the schedule, not from the call: a client that
        # fell behind must not hide the wait (coordinated omission).
        t0 = scheduled
        match = await self.call(mm.enqueue, seeker)
        t1 = time.monotonic()
        if match is not None:
            self.log.append(["M", uid, match.partner_id, match.match_id, t0, t1])
            await self.notify(match.partner_id, "m", match.match_id)
            chat = min(self.rnd.expovariate(1 / self.cfg.chat_mean), 4 * self.cfg.chat_mean)
            await asyncio.sleep(chat)
            await self.end(uid, skip=self.rnd.random() < SKIP_SHARE)
            return
        self.log.append(["W", uid, t0, t1])
        await self.call(mm.expected_wait, seeker)  # what the consumer shows a waiting user
        try:
            kind, _ = await asyncio.wait_for(box.get(), self.cfg.leave_after)
            paired = kind == "m"
        except TimeoutError:
            t2 = time.monotonic()
            await self.call(mm.dequeue, uid)
            # A match may have landed just before the dequeue: the pair is the truth.
            paired = await self.call(mm.partner_of, uid) is not None
            if not paired:
                self.log.append(["L", uid, t2])
        if paired:
            try:  # the partner ends the chat; if they never do, this side does
                async with asyncio.timeout(4 * self.cfg.chat_mean + 10):
                    while (await box.get())[0] != "e":
                        pass
            except TimeoutError:
                await self.end(uid, skip=False)

    async def end(self, uid: int, *, skip: bool) -> None:
        t2 = time.monotonic()
        ended = await self.call(self.mm.end_match, uid, skip=skip)
        t3 = time.monotonic()
        self.log.append(["E", uid, ended[1] if ended else None, skip, t2, t3])
        if ended:
            await self.notify(ended[1], "e", ended[0])


# --- Replay ---------------------------------------------------------------------------------
def replay(events: list[list[Any]], skip_ttl: float) -> dict[str, Any]:
    """Violations and times to match, from the merged logs of all processes."""
    # A user's "left" is not replayed: whether an arrival ended unmatched is read from the
    # matches themselves (an arrival that no match consumed), which no clock skew can blur.
    order = {"W": 2, "M": 5, "E": 4}  # the field each kind is ordered by
    timeline = sorted((e for e in events if e[0] in order), key=lambda e: e[order[e[0]]])
    seekers: dict[int, Any] = {}

    def who(uid: int) -> Any:
        if uid not in seekers:
            seekers[uid] = seeker_for(uid)
        return seekers[uid]

    current: dict[int, str] = {}  # uid -> match id of the pair they are in
    skipped_at: dict[frozenset[int], float] = {}  # pair -> when the skip was recorded
    waiting_since: dict[int, float] = {}  # uid -> arrival of a waiting user not yet matched
    v = {"self-match": 0, "double match": 0, "filter broken": 0, "re-pair within skip TTL": 0}
    seeker_ms: list[float] = []
    overall_ms: list[float] = []
    arrivals = matched = left = 0
    for e in timeline:
        kind = e[0]
        if kind == "W":
            arrivals += 1
            if e[1] in waiting_since:  # the previous arrival of this user found nobody
                left += 1
            waiting_since[e[1]] = e[2]
        elif kind == "M":
            _, uid, partner, match_id, t0, t1 = e
            arrivals += 1
            matched += 2
            if uid == partner:
                v["self-match"] += 1
            if not compatible(who(uid), who(partner)):
                v["filter broken"] += 1
            if uid in current or partner in current:
                v["double match"] += 1
            pair = frozenset((uid, partner))
            if pair in skipped_at and skipped_at[pair] < t0 < skipped_at[pair] + skip_ttl:
                v["re-pair within skip TTL"] += 1
            current[uid] = current[partner] = match_id
            seeker_ms.append((t1 - t0) * 1000)
            overall_ms.append((t1 - t0) * 1000)
            since = waiting_since.pop(partner, None)
            if since is not None:
                overall_ms.append((t1 - since) * 1000)
        elif kind == "E":
            _, uid, partner, skip, _t2, t3 = e
            current.pop(uid, None)
            if partner is not None:
                current.pop(partner, None)
                if skip:
                    skipped_at[frozenset((uid, partner))] = t3
    left += len(waiting_since)
    seeker_ms.sort()
    overall_ms.sort()
    return {
        "arrivals": arrivals,
        "matched": matched,
        "left": left,
        "seeker_ms": seeker_ms,
        "overall_ms": overall_ms,
        "violations": v,
        "skipped_pairs": len(skipped_at),
        "errors": sorted({e[3] for e in events if e[0] == "X"}),
        "error_count": sum(1 for e in events if e[0] == "X"),
    }


# --- Main -----------------------------------------------------------------------------------
def prefill(n: int) -> None:
    """`n` users nobody arriving can match (they want countries no arrival is from)."""
    from videochat.matchmaking import Seeker, enqueue_sync

    rnd = random.Random(5)
    for i in range(n):
        uid = 9 * UID_BLOCK + i
        enqueue_sync(
            Seeker(
                uid, f"bench.idle!{uid}", rnd.choice("mf"), "US", None, rnd.choice(ABSENT_COUNTRIES)
            )
        )


def commandstats(r: Any) -> tuple[int, int, float]:
    """(calls, microseconds) of EVALSHA on the server so far (the Redis time of our steps),
    and the server's CPU seconds."""
    s = r.info("commandstats").get("cmdstat_evalsha", {})
    cpu = r.info("cpu")
    return int(s.get("calls", 0)), int(s.get("usec", 0)), cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def run_direct(args: argparse.Namespace) -> dict[str, Any]:
    """The direct mode: two worker processes call the Lua steps; prints its table and returns
    the figures the end-to-end mode compares itself with."""
    bench = bench_env(redis_url=args.redis_url)
    bench.apply()
    import django

    django.setup()
    from django.conf import settings

    from realtime.redis import get_redis
    from videochat import matchmaking as mm

    log_dir = VAR / f"bench-matchmaking-{bench.run_id}"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        r = get_redis()
        prefill(args.waiting)
        calls0, usec0, rcpu0 = commandstats(r)
        ctx = multiprocessing.get_context("spawn")
        # time.monotonic() of the first arrival: one clock for every process on Linux.
        ready, start_at = ctx.Barrier(PROCESSES + 1, timeout=120), ctx.Value("d", 0.0)
        procs = []
        for i in range(PROCESSES):
            cfg = WorkerConfig(
                i,
                args.rate / PROCESSES,
                args.seconds,
                args.leave_after,
                args.chat_mean,
                str(log_dir / f"worker-{i}.jsonl"),
            )
            p = ctx.Process(target=worker_main, args=(cfg, ready, start_at))
            p.start()
            procs.append((p, cfg))
        ready.wait()  # both workers are set up
        start_at.value = time.monotonic() + 0.5
        ready.wait()
        for p, _ in procs:
            p.join(timeout=args.seconds + 120)
            if p.exitcode is None:
                p.kill()
            if p.exitcode != 0:
                raise SystemExit(f"a worker process failed (exit code {p.exitcode})")
        calls1, usec1, rcpu1 = commandstats(r)
        load = os.getloadavg()[0]
        events = []
        for _, cfg in procs:
            events += [json.loads(line) for line in Path(cfg.log_path).read_text().splitlines()]
        done = [e for e in events if e[0] == "done"]
        result = replay(events, settings.VIDEOCHAT_SKIP_TTL_SECONDS)
        keys = mm.state_keys()
        left_pairs, left_waiting = r.hlen(keys[2]), r.hlen(keys[1]) - args.waiting
        client_cpu = sum(e[2] for e in events if e[0] == "cpu")
        redis_cpu = rcpu1 - rcpu0
        report(
            args,
            result,
            done,
            start_at.value,
            (calls1 - calls0, usec1 - usec0),
            left_pairs,
            left_waiting,
            client_cpu=client_cpu,
            redis_cpu=redis_cpu,
            load=load,
        )
        elapsed = max(e[2] for e in done) - start_at.value
        arrivals = max(1, result["arrivals"])
        return {
            "rate": args.rate,
            "achieved": result["arrivals"] / elapsed,
            "seeker_p50": percentile(result["seeker_ms"], 50),
            "seeker_p99": percentile(result["seeker_ms"], 99),
            "all_p50": percentile(result["overall_ms"], 50),
            "all_p99": percentile(result["overall_ms"], 99),
            "violations": sum(result["violations"].values()),
            "client_cpu_ms": 1000 * client_cpu / arrivals,
            "redis_cpu_ms": 1000 * redis_cpu / arrivals,
            "load": load,
        }
    finally:
        cleanup(bench)
        if not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--mode",
        choices=["direct", "e2e"],
        default="e2e",
        help="e2e: WebSocket clients through the video chat consumer on two uvicorn processes, "
        "with the direct mode at the same rates for comparison; direct: the Lua steps only",
    )
    ap.add_argument("--rate", type=float, default=1000, help="arrivals per second, all processes")
    ap.add_argument(
        "--rates",
        default="",
        help="e2e: a ladder of rates tried in turn (default: --rate only); stops at the first "
        "one sustained unless --all-rates",
    )
    ap.add_argument("--all-rates", action="store_true", help="e2e: run every rate of the ladder")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--waiting", type=int, default=10_000, help="unmatchable users in line first")
    ap.add_argument("--leave-after", type=float, default=3.0, help="seconds before giving up")
    ap.add_argument("--chat-mean", type=float, default=2.0, help="mean chat length, seconds")
    ap.add_argument("--users", type=int, default=0, help="e2e: sockets (default: 4.5 x rate)")
    ap.add_argument("--clients", type=int, default=2, help="e2e: client processes")
    ap.add_argument("--procs", type=int, default=2, help="e2e: uvicorn processes")
    ap.add_argument("--bans", type=int, default=5, help="e2e: users banned during each step")
    ap.add_argument("--prebanned", type=int, default=20, help="e2e: users banned before the run")
    ap.add_argument("--no-direct", action="store_true", help="e2e: skip the direct comparison")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    ap.add_argument("--summary-json", default="", help=argparse.SUPPRESS)
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--quick", action="store_true", help="300 arrivals/s for 5 s, 1,000 waiting")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.seconds, args.waiting = 300, 5, 1000
    if args.mode == "direct":
        summary = run_direct(args)
        if args.summary_json:
            Path(args.summary_json).write_text(json.dumps(summary))
        return
    run_e2e(args)


def report(
    args: argparse.Namespace,
    res: dict[str, Any],
    done: list[list[Any]],
    start_at: float,
    evalsha: tuple[int, int],
    left_pairs: int,
    left_waiting: int,
    *,
    client_cpu: float,
    redis_cpu: float,
    load: float,
) -> None:
    seeker, overall = res["seeker_ms"], res["overall_ms"]
    elapsed = max(e[2] for e in done) - start_at
    arrivals = max(1, res["arrivals"])
    v = res["violations"]
    rows: list[list[object]] = [
        ["arrivals", res["arrivals"]],
        ["arrival rate achieved (/s)", res["arrivals"] / elapsed],
        ["arrivals dropped (no idle simulated user)", sum(e[3] for e in done)],
        ["matched (% of arrivals)", 100 * res["matched"] / max(1, res["arrivals"])],
        [
            f"left unmatched after {args.leave_after:g} s (% of arrivals)",
            100 * res["left"] / max(1, res["arrivals"]),
        ],
        ["time to match, partner already waiting: p50 (ms)", percentile(seeker, 50)],
        ["time to match, partner already waiting: p99 (ms)", percentile(seeker, 99)],
        [
            "time to match, partner already waiting: max (ms)",
            seeker[-1] if seeker else float("nan"),
        ],
        ["time to match, all matched users: p50 (ms)", percentile(overall, 50)],
        ["time to match, all matched users: p99 (ms)", percentile(overall, 99)],
        ["Redis time per step, mean (us)", evalsha[1] / max(1, evalsha[0])],
        ["client CPU per arrival, both processes (ms)", 1000 * client_cpu / arrivals],
        ["Redis CPU per arrival (ms)", 1000 * redis_cpu / arrivals],
        [
            "CPU this rate needs, clients + Redis (cores)",
            (client_cpu + redis_cpu) / arrivals * args.rate,
        ],
        ["machine load average at the end (2 cores)", f"{load:.1f}"],
        ["pairs skipped (then kept apart)", res["skipped_pairs"]],
        *[[f"violations: {k}", n] for k, n in v.items()],
        ["client errors", f"{res['error_count']} {' '.join(res['errors'])}".strip()],
        ["pairs / waiting entries left in Redis after the run", f"{left_pairs} / {left_waiting}"],
    ]
    title = (
        f"Matchmaking: {args.rate:,.0f} arrivals/s for {args.seconds:g} s from {PROCESSES} OS "
        f"processes calling videochat.matchmaking (async, one Lua step each) against one Redis, "
        f"the code path the ASGI processes use; {args.waiting:,} unmatchable users waiting first"
    )
    print(table(title, ["measure", "value"], rows))
    ok = percentile(seeker, 99) <= P99_TARGET_MS and not any(v.values())
    print(
        f"target: p99 <= {P99_TARGET_MS:.0f} ms when a compatible partner waits, zero violations: "
        + ("met" if ok else "NOT met")
    )


# --- End-to-end mode ------------------------------------------------------------------------
# Real WebSocket clients through /ws/videochat/ (videochat.consumers) on --procs uvicorn
# processes sharing PostgreSQL and Redis. Every simulated user holds one socket for the whole
# run (the page open, `hello` sent before the clock starts); an arrival is a `queue.join` at
# its scheduled instant, and the times are from that instant to `match.found` on each side.

# A public address GeoIP places in each country of the mix; the clients send it as
# X-Forwarded-For from 127.0.0.1, a trusted proxy for the run (VIDEOCHAT_TRUSTED_PROXIES),
# so the country comes through the product's own lookup. "" -> a private address: unknown.
COUNTRY_IPS = {
    "US": "8.8.8.8",
    "IN": "49.44.0.1",
    "BR": "177.10.0.1",
    "RU": "77.88.8.8",
    "DE": "85.214.0.1",
    "FR": "90.0.0.1",
    "GB": "81.2.69.160",
    "TR": "85.96.0.1",
    "": "10.20.30.40",
}
CLOSE_FORBIDDEN = 4403
JOIN, LEAVE = json.dumps({"type": "queue.join"}), json.dumps({"type": "queue.leave"})
SUSTAINED_P99_MS = 1000.0  # a step whose seekers' p99 exceeds this has a growing backlog
CONNECTS_IN_FLIGHT = 40  # per client process while the sockets open


def machine_cpu() -> float:
    """CPU seconds every process of the machine has used so far (all cores, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Arrivals:
    """CPU over a step's arrivals alone (from just before the first to the last)."""

    seconds: float
    servers: list[float]
    clients: list[float]
    machine: float

    @property
    def server_pct(self) -> list[float]:
        return [100 * c / self.seconds for c in self.servers]

    @property
    def client_pct(self) -> list[float]:
        return [100 * c / self.seconds for c in self.clients]

    @property
    def machine_pct(self) -> float:
        return 100 * self.machine / (self.seconds * (os.cpu_count() or 1))


def own_database(url: str) -> str:
    """A throwaway database on the same PostgreSQL server, dropped at the end."""
    import psycopg

    name = f"bench_match_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def drop_database(url: str, run_url: str) -> None:
    import psycopg

    name = urlsplit(run_url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def e2e_fixtures(users: int, prebanned: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Users who pass video chat's rules (adult birth date, a profile with gender, nickname
    and language; the paid-filters entitlement for those who filter), with a login session
    and its device each, written in bulk (setup, not the code under test). The nickname
    `u<pk>` is what the partner's card shows: the replay identifies partners by it. Returns
    (jobs for the pool, jobs for users banned before the run)."""
    import datetime as dt

    from django.utils import timezone

    from accounts.models import Profile, User
    from benchmarks._common import sessions_with_devices
    from payments.models import Entitlement, Product
    from videochat.models import Ban
    from videochat.selectors import FILTERS_FEATURE

    tag = os.environ["REDIS_KEY_PREFIX"].rstrip(":")
    total = users + prebanned
    User.objects.bulk_create(
        [User(email=f"{tag}-{i}@example.com", password="!bench") for i in range(total)],
        batch_size=1000,
    )
    people = list(User.objects.filter(email__startswith=f"{tag}-").order_by("pk"))
    seekers = {u.pk: seeker_for(u.pk) for u in people}
    Profile.objects.bulk_create(
        [
            Profile(
                user=u,
                nickname=f"u{u.pk}",
                gender=seekers[u.pk].gender,
                birth_date=dt.date(1990, 1, 1) + dt.timedelta(days=u.pk % 5000),
                country=seekers[u.pk].country,
                language="en",
            )
            for u in people
        ],
        batch_size=1000,
    )
    product = Product.objects.create(
        code=f"{tag}-filters", name="Filters", features=[FILTERS_FEATURE]
    )
    Entitlement.objects.bulk_create(
        [
            Entitlement(user=u, product=product, valid_until=timezone.now() + dt.timedelta(days=30))
            for u in people
            if seekers[u.pk].want_gender or seekers[u.pk].want_country
        ],
        batch_size=1000,
    )
    now = timezone.now()
    Ban.objects.bulk_create(
        [
            Ban(user=u, reason="bench", starts_at=now, expires_at=now + dt.timedelta(days=1))
            for u in people[users:]
        ]
    )
    cookies = sessions_with_devices(people)
    jobs = []
    for u, cookie in zip(people, cookies, strict=True):
        s = seekers[u.pk]
        hello: dict[str, Any] = {"type": "hello", "gender": s.gender, "language": "en"}
        hello["client"] = {"browser": "bench", "os": "Linux"}
        if s.want_gender:
            hello["want_gender"] = s.want_gender
        if s.want_country:
            hello["want_country"] = s.want_country
        jobs.append({"uid": u.pk, "cookie": cookie, "ip": COUNTRY_IPS[s.country], "hello": hello})
    return jobs[:users], jobs[users:]


@dataclass
class ClientConfig:
    index: int
    clients: int
    urls: list[str]  # the server processes' ws base URLs
    jobs: list[dict[str, Any]]
    prebanned: list[dict[str, Any]]
    rates: list[float]
    seconds: float
    leave_after: float
    chat_mean: float
    log_dir: str


class Sock:
    """One simulated user's socket and what the client believes about it."""

    def __init__(self, uid: int, ws: Any) -> None:
        self.uid = uid
        self.ws = ws
        self.inbox: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.current: str | None = None  # the match this user is in, as its frames say
        self.dead = False


def quiet_gc() -> None:
    """The client's own garbage collection between steps, none of the full kind during one.
    CPython walks every object it holds (a thousand sockets, the step's growing log) each time
    the survivors pile up: 40 % of a client process's samples at 500 arrivals/s, charged to
    whatever allocated next (json.dumps of the frame being sent), and a pause in the middle
    of the times measured. Young collections still run; what survives is frozen."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000_000)


def e2e_client_main(cfg: ClientConfig, barrier: Any, start_at: Any, stop: Any) -> None:
    asyncio.run(E2EClient(cfg).run(barrier, start_at, stop))


class E2EClient:
    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.rnd = random.Random(2000 + cfg.index)
        self.socks: dict[int, Sock] = {}
        self.idle: list[int] = []
        self.log: list[list[Any]] = []
        self.no_idle_user = 0
        self.tasks: set[asyncio.Task[None]] = set()  # readers, ban checks
        self.closing = False  # the run is over: closes from here on are ours

    async def open(self, job: dict[str, Any], n: int) -> Any:
        import websockets

        url = self.cfg.urls[n % len(self.cfg.urls)]
        return await websockets.connect(
            f"{url}/ws/videochat/",
            additional_headers={
                "Cookie": f"sessionid={job['cookie']}",
                "X-Forwarded-For": job["ip"],
            },
            origin=url.replace("ws://", "http://"),  # type: ignore[arg-type]
            compression=None,
            open_timeout=120,
            ping_interval=None,
            close_timeout=1,
            max_queue=None,
        )

    async def reader(self, s: Sock) -> None:
        import websockets

        code = None
        try:
            async for raw in s.ws:
                s.inbox.put_nowait((time.monotonic(), json.loads(raw)))
        except websockets.ConnectionClosed:
            pass
        code, t = s.ws.close_code, time.monotonic()
        s.dead = True
        if not self.closing:  # a close the server chose (a ban), idle sockets included
            self.log.append(["C", s.uid, code, t])
            if code == CLOSE_FORBIDDEN:
                self.spawn(self.reconnect_banned(s.uid))
        s.inbox.put_nowait((t, {"type": "_closed", "code": code}))

    async def setup_one(self, job: dict[str, Any], n: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                ws = await self.open(job, n)
                s = Sock(job["uid"], ws)
                await ws.send(json.dumps(job["hello"]))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    if msg["type"] == "ready":
                        break
                    if msg["type"] == "error":
                        raise RuntimeError(msg.get("code"))
            except Exception as exc:  # counted and shown
                self.log.append(["setup-failed", job["uid"], f"{type(exc).__name__} {exc}"[:80]])
                return
        self.socks[s.uid] = s
        self.idle.append(s.uid)
        self.spawn(self.reader(s))

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def refused(self, job: dict[str, Any], n: int) -> bool:
        """A banned user's connect must end in error "banned" and close 4403. What happened
        instead is logged ("refusal"), so that a count of "banned user let in" can be read."""
        import websockets

        try:
            ws = await self.open(job, n)
        except Exception as exc:
            # Not a refusal the product makes.
            self.log.append(["refusal", job["uid"], f"open failed: {type(exc).__name__} {exc}"])
            return False
        codes = []
        # A refusal may be in before the hello goes out: the send then fails on the closed
        # socket, and the error frame that came with the refusal is still there to read.
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps(job["hello"]))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "error":
                    codes.append(msg.get("code"))
                if msg["type"] == "ready":
                    break
        except websockets.ConnectionClosed:
            pass
        await ws.close()
        ok = ws.close_code == CLOSE_FORBIDDEN and "banned" in codes
        if not ok:
            self.log.append(["refusal", job["uid"], f"close {ws.close_code}, errors {codes}"])
        return ok

    async def run(self, barrier: Any, start_at: Any, stop: Any) -> None:
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
        t = time.monotonic()
        await asyncio.gather(*(self.setup_one(j, n, gate) for n, j in enumerate(self.cfg.jobs)))
        self.log.append(["opened", self.cfg.index, len(self.socks), time.monotonic() - t])
        for job in self.cfg.prebanned:
            ok = await self.refused(job, job["uid"])
            self.log.append(["prebanned", job["uid"], ok])
        self.jobs = {j["uid"]: j for j in self.cfg.jobs}
        for step, rate in enumerate(self.cfg.rates):
            quiet_gc()
            await asyncio.to_thread(barrier.wait)  # everyone set up
            await asyncio.to_thread(barrier.wait)  # start time (or stop) written
            if stop.value:
                break
            await self.step(step, rate / self.cfg.clients, start_at.value)
            path = Path(self.cfg.log_dir) / f"client-{self.cfg.index}-step-{step}.jsonl"
            path.write_text("\n".join(json.dumps(e) for e in self.log))
            self.log = []
            await asyncio.to_thread(barrier.wait)  # the step is over, its log written
        self.closing = True
        await asyncio.gather(
            *(s.ws.close() for s in self.socks.values() if not s.dead), return_exceptions=True
        )

    async def step(self, step: int, rate: float, start_at: float) -> None:
        cpu0 = time.process_time()
        visits: set[asyncio.Task[None]] = set()
        self.no_idle_user = 0
        total = int(rate * self.cfg.seconds)
        start = start_at + self.cfg.index / (rate * self.cfg.clients)
        for k in range(total):
            scheduled = start + k / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            uid = self.take_idle()
            if uid is None:
                self.no_idle_user += 1
                continue
            task = asyncio.create_task(self.visit(self.socks[uid], scheduled))
            visits.add(task)
            task.add_done_callback(visits.discard)
        self.log.append(["done", self.cfg.index, time.monotonic(), self.no_idle_user])
        while visits:
            await asyncio.gather(*list(visits))
        self.log.append(["cpu", self.cfg.index, time.process_time() - cpu0])

    def take_idle(self) -> int | None:
        """A random idle user whose socket is open (closed ones are dropped on the way), or
        None. Filtering the whole idle list per arrival was 6 % of a client's CPU at 1,000/s."""
        while self.idle:
            i = self.rnd.randrange(len(self.idle))
            self.idle[i], self.idle[-1] = self.idle[-1], self.idle[i]
            uid = self.idle.pop()
            if not self.socks[uid].dead:
                return uid
        return None

    async def frame(self, s: Sock, timeout: float) -> tuple[float, dict[str, Any]] | None:
        if not s.inbox.empty():
            return s.inbox.get_nowait()
        try:
            # A deadline on this task, not wait_for's extra task per frame.
            async with asyncio.timeout(max(0.0, timeout)):
                return await s.inbox.get()
        except TimeoutError:
            return None

    async def send(self, s: Sock, msg: dict[str, Any] | str) -> float:
        """`msg` as it goes out: the frames that never change are JSON already."""
        t = time.monotonic()
        if not s.dead:
            with contextlib.suppress(Exception):
                await s.ws.send(msg if isinstance(msg, str) else json.dumps(msg))
        return t

    def found(
        self, s: Sock, t: float, m: dict[str, Any], entry: str, t0: float, t_req: float
    ) -> None:
        # Logged: user, match, role, partner (from the card's nickname), how this queue entry
        # began (A: scheduled arrival, N: after pressing next, R: put back by the server after
        # the partner left), its start, when the request went out, when the frame came, and
        # whether the user was still in another match by its own frames (a double match).
        name = m["partner"]["name"]
        partner = int(name[1:]) if name.startswith("u") else None
        self.log.append(
            [
                "F",
                s.uid,
                m["match_id"],
                m["role"],
                partner,
                entry,
                t0,
                t_req,
                t,
                s.current is not None,
            ]
        )
        s.current = m["match_id"]

    def closed(self, s: Sock, t: float, m: dict[str, Any]) -> None:
        """The socket closed mid-visit (the reader logged it): the visit is over."""
        s.current = None

    async def reconnect_banned(self, uid: int) -> None:
        await asyncio.sleep(0.2)
        ok = await self.refused(self.jobs[uid], uid)
        self.log.append(["rebanned", uid, ok, time.monotonic()])

    async def visit(self, s: Sock, scheduled: float) -> None:
        try:
            await self._visit(s, scheduled)
        except Exception as exc:  # counted and shown: a benchmark must finish to report
            self.log.append(["X", s.uid, time.monotonic(), type(exc).__name__])
        if s.dead:
            return
        await asyncio.sleep(self.rnd.uniform(0.2, 1.5))  # a pause before coming back
        self.idle.append(s.uid)

    async def _visit(self, s: Sock, scheduled: float) -> None:
        t_req = await self.send(s, JOIN)
        self.log.append(["A", s.uid, scheduled, t_req])
        entry, t0 = "A", scheduled
        deadline = time.monotonic() + 60  # until queue.waiting says how long to wait
        while True:  # waiting for a partner
            got = await self.frame(s, deadline - time.monotonic())
            if got is None:  # nobody came: leave
                self.log.append(["L", s.uid, time.monotonic()])
                await self.send(s, LEAVE)
                return await self.leaving(s)
            t, m = got
            if m["type"] == "_closed":
                return self.closed(s, t, m)
            if m["type"] == "queue.waiting":
                deadline = t + self.cfg.leave_after
            elif m["type"] == "match.found":
                self.found(s, t, m, entry, t0, t_req)
                break
            elif m["type"] == "queue.left" or (
                m["type"] == "match.ended" and m["match_id"] == s.current
            ):
                # The end of an earlier visit, come after leaving() gave up waiting for it
                # (an overloaded server): that match is over, so the next one is no double.
                s.current = None
            elif m["type"] == "error":
                self.log.append(["err", s.uid, m.get("code"), t])
        match_id = s.current
        if m["role"] == "offer":  # the seeker ends the chat
            chat = min(self.rnd.expovariate(1 / self.cfg.chat_mean), 4 * self.cfg.chat_mean)
            until = time.monotonic() + chat
        else:  # the partner ends it; if they never do, this side does
            until = time.monotonic() + 4 * self.cfg.chat_mean + 10
        while True:
            got = await self.frame(s, until - time.monotonic())
            if got is None:
                skip = m["role"] == "offer" and self.rnd.random() < SKIP_SHARE
                said = {"type": "next", "match_id": match_id} if skip else {"type": "queue.leave"}
                t = await self.send(s, said)
                self.log.append(["E", s.uid, match_id, m["partner"]["name"], skip, t])
                s.current = None
                if skip:  # the server queues us again; this user is done for now
                    await self.send(s, LEAVE)
                return await self.leaving(s, "N", t)
            t, ended = got
            if ended["type"] == "_closed":
                return self.closed(s, t, ended)
            if ended["type"] == "match.ended" and ended["match_id"] == match_id:
                # The partner left: the server put us back in line; this user leaves too.
                self.log.append(["G", s.uid, match_id, ended["reason"], t])
                s.current = None
                await self.send(s, LEAVE)
                return await self.leaving(s, "R", t)

    async def leaving(self, s: Sock, entry: str = "", t0: float = 0.0) -> None:
        """Until `queue.left`: a match the server made in between is real and is logged."""
        deadline = time.monotonic() + 30
        while True:
            got = await self.frame(s, deadline - time.monotonic())
            if got is None:
                self.log.append(["X", s.uid, time.monotonic(), "no queue.left"])
                return None
            t, m = got
            if m["type"] == "_closed":
                return self.closed(s, t, m)
            if m["type"] == "match.found":
                self.found(s, t, m, entry or "L", t0, t0)
            elif m["type"] == "match.ended" and m["match_id"] == s.current:
                self.log.append(["G", s.uid, m["match_id"], m["reason"], t])
                s.current = None
            elif m["type"] == "queue.left":
                s.current = None
                return None


def replay_e2e(events: list[list[Any]], skip_ttl: float, prebanned: set[int]) -> dict[str, Any]:
    """Violations and times to match from the clients' frames (all on one monotonic clock)."""
    finds = [e for e in events if e[0] == "F"]
    by_match: dict[str, list[list[Any]]] = {}
    for e in finds:
        by_match.setdefault(e[2], []).append(e)
    # When a user's ban took effect: the close 4403 its socket got (the server processed the
    # ban before sending it).
    banned_at = {e[1]: e[3] for e in events if e[0] == "C" and e[2] == CLOSE_FORBIDDEN}
    # When a skip had surely been recorded: the partner was told of the "next".
    skipped: dict[frozenset[int], float] = {}
    partner_in = {e[2]: e[4] for e in finds}
    for e in events:
        if e[0] == "G" and e[3] == "next" and partner_in.get(e[2]) is not None:
            skipped[frozenset((e[1], partner_in[e[2]]))] = e[4]
    v = {
        "self-match": 0,
        "double match": 0,
        "filter broken": 0,
        "matched with a banned user": 0,
        "re-pair within skip TTL": 0,
        "one match id, 3+ users or partners disagree": 0,
        "banned user let in": sum(
            1 for e in events if e[0] in ("prebanned", "rebanned") and not e[2]
        ),
    }
    doubles: list[list[Any]] = []  # shown, so that a run can be followed up
    for e in finds:
        _, uid, _match_id, role, partner, _entry, _t0, t_req, _t, double = e
        if partner is None or partner == uid:
            v["self-match"] += 1
            continue
        if double:
            v["double match"] += 1
            doubles.append(e)
        if not compatible(seeker_for(uid), seeker_for(partner)):
            v["filter broken"] += 1
        if uid in prebanned or partner in prebanned:
            v["matched with a banned user"] += 1
        # Sound under any delay: the seeker asked after the ban had taken effect.
        if role == "offer" and partner in banned_at and t_req > banned_at[partner]:
            v["matched with a banned user"] += 1
        pair = frozenset((uid, partner))
        if role == "offer" and pair in skipped and skipped[pair] < t_req < skipped[pair] + skip_ttl:
            v["re-pair within skip TTL"] += 1
    both = 0
    told_after: list[float] = []
    waited_for_partner: list[float] = []
    after_partner: list[float] = []
    for sides in by_match.values():
        users = {e[1] for e in sides}
        if len(users) > 2 or any(e[4] not in users for e in sides if len(users) == 2):
            v["one match id, 3+ users or partners disagree"] += 1
        offer = [e for e in sides if e[3] == "offer"]
        answer = [e for e in sides if e[3] == "answer"]
        if offer and answer:
            both += 1
            told_after.append((answer[0][8] - offer[0][8]) * 1000)
            if answer[0][5] == "A":
                # The waiting side's time is its wait for a compatible arrival (the workload's:
                # no server can match before the partner exists) plus the system's part, from
                # the partner's entry to the waiting side's match.found.
                waited_for_partner.append(max(0.0, offer[0][6] - answer[0][6]) * 1000)
                after_partner.append((answer[0][8] - max(offer[0][6], answer[0][6])) * 1000)
    arrivals = [e for e in events if e[0] == "A"]
    timed = [e for e in finds if e[5] == "A"]
    seeker = sorted((e[8] - e[6]) * 1000 for e in timed if e[3] == "offer")
    waiter = sorted((e[8] - e[6]) * 1000 for e in timed if e[3] == "answer")
    lag = sorted((e[3] - e[2]) * 1000 for e in arrivals)
    return {
        "arrivals": len(arrivals),
        "matched": len(timed),
        "left": sum(1 for e in events if e[0] == "L"),
        "matches": len(by_match),
        "matches_both": both,
        "seeker_ms": seeker,
        "waiter_ms": waiter,
        "overall_ms": sorted(seeker + waiter),
        "told_after_ms": sorted(told_after),
        "waited_for_partner_ms": sorted(waited_for_partner),
        "after_partner_ms": sorted(after_partner),
        "system_ms": sorted(seeker + after_partner),
        "send_lag_ms": lag,
        "violations": v,
        "doubles": [
            [x for x in events if x[0] in "AFEGL" and len(x) > 1 and x[1] == d[1]]
            for d in doubles[:2]
        ],
        "bans": len(banned_at),
        "skips": len(skipped),
        "errors": sorted({str(e[3]) for e in events if e[0] == "X"}),
        "error_count": sum(1 for e in events if e[0] == "X"),
        "error_frames": sum(1 for e in events if e[0] == "err"),
    }


def ban_during(uids: list[int], count: int, start: float, seconds: float) -> None:
    """Ban `count` users through the product's service (the row, then the event that closes
    their socket), spread over the step."""
    import datetime as dt

    from accounts.models import User
    from videochat.services import ban_create

    rnd = random.Random(int(start))
    for k, uid in enumerate(rnd.sample(uids, min(count, len(uids)))):
        delay = start + (k + 0.5) * seconds / max(1, count) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ban_create(
            user=User.objects.get(pk=uid),
            reason="bench",
            duration=dt.timedelta(days=1),
            created_by=None,
        )
        uids.remove(uid)


def run_direct_subprocess(args: argparse.Namespace, rate: float) -> dict[str, Any] | None:
    """The direct mode at `rate`, in a process (and Redis prefix) of its own."""
    out = VAR / f"bench-matchmaking-direct-{os.getpid()}-{int(rate)}.json"
    cmd = [
        sys.executable,
        __file__,
        "--mode",
        "direct",
        "--rate",
        str(rate),
        "--seconds",
        str(args.seconds),
        "--waiting",
        str(args.waiting),
        "--leave-after",
        str(args.leave_after),
        "--chat-mean",
        str(args.chat_mean),
        "--summary-json",
        str(out),
    ]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_KEY_PREFIX",)}
    subprocess.run(cmd, check=False, env=env)
    if not out.exists():
        return None
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


def run_e2e(args: argparse.Namespace) -> None:
    from benchmarks._common import cpu_seconds, migrate, start_server, stop_server

    if not args.database_url.startswith("postgres"):
        raise SystemExit("the end-to-end mode runs on PostgreSQL: set DATABASE_URL")
    rates = [float(r) for r in args.rates.split(",")] if args.rates else [args.rate]
    users = args.users or int(max(rates) * 4.5)
    load_before = os.getloadavg()
    run_db = own_database(args.database_url)
    bench = bench_env(run_db, args.redis_url)
    bench.env["VIDEOCHAT_TRUSTED_PROXIES"] = "127.0.0.1"
    bench.apply()
    log_dir = VAR / f"bench-matchmaking-{bench.run_id}"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[Any] = []
    summaries: list[dict[str, Any]] = []
    try:
        print(f"matchmaking e2e {bench.run_id}: migrating, {users:,} users", flush=True)
        migrate(bench)
        import django

        django.setup()
        from django.conf import settings

        from realtime.redis import get_redis
        from videochat import matchmaking as mm

        jobs, banned_jobs = e2e_fixtures(users, args.prebanned)
        servers = [start_server("uvicorn", bench.env) for _ in range(args.procs)]
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(args.clients + 1, timeout=None)
        start_at, stop = ctx.Value("d", 0.0), ctx.Value("i", 0)
        procs = []
        for i in range(args.clients):
            cfg = ClientConfig(
                i,
                args.clients,
                [s.ws_url for s in servers],
                jobs[i :: args.clients],
                banned_jobs[i :: args.clients],
                rates,
                args.seconds,
                args.leave_after,
                args.chat_mean,
                str(log_dir),
            )
            p = ctx.Process(target=e2e_client_main, args=(cfg, barrier, start_at, stop))
            p.start()
            procs.append(p)
        t_open = time.monotonic()
        pool = [j["uid"] for j in jobs]
        r = get_redis()
        for n, rate in enumerate(rates):
            barrier.wait()  # the clients are set up
            if n == 0:
                print(
                    f"  {len(jobs):,} sockets opened in {time.monotonic() - t_open:.1f} s",
                    flush=True,
                )
            cpu0 = [cpu_seconds(s.process.pid) for s in servers]
            ccpu0 = [cpu_seconds(p.pid) for p in procs]  # type: ignore[arg-type]
            # Put (back) in line now: a waiting entry expires VIDEOCHAT_WAIT_TTL_SECONDS after
            # it was last renewed, and opening the sockets may take longer than that.
            prefill(args.waiting)
            rcpu0 = commandstats(r)[2]
            conns0 = int(r.info("stats")["total_connections_received"])
            machine0, t0 = machine_cpu(), time.monotonic()
            srv0 = [cpu_seconds(s.process.pid) for s in servers]
            cli0 = [cpu_seconds(p.pid) for p in procs]  # type: ignore[arg-type]
            start_at.value = time.monotonic() + 0.5
            barrier.wait()
            ban_during(pool, args.bans, start_at.value, args.seconds)
            # The CPU of the arrivals' own seconds: the step's wall clock below also covers the
            # visits still going after the last arrival (chats, the answer side's wait: 10-20
            # s), which averaged a saturated machine down to a third of a core per server.
            time.sleep(max(0.0, start_at.value + args.seconds - time.monotonic()))
            during = Arrivals(
                seconds=time.monotonic() - t0,
                servers=[
                    cpu_seconds(s.process.pid) - c for s, c in zip(servers, srv0, strict=True)
                ],
                clients=[cpu_seconds(p.pid) - c for p, c in zip(procs, cli0, strict=True)],  # type: ignore[arg-type]
                machine=machine_cpu() - machine0,
            )
            barrier.wait()  # the step is over, its logs written
            wall = time.monotonic() - start_at.value
            server_cpu = [
                cpu_seconds(s.process.pid) - c for s, c in zip(servers, cpu0, strict=True)
            ]
            client_cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, ccpu0, strict=True)]  # type: ignore[arg-type]
            redis_cpu = commandstats(r)[2] - rcpu0
            # Connections opened while the step ran (a process that falls behind opened one
            # per request in its backlog before matchmaking batched its steps).
            conns = int(r.info("stats")["total_connections_received"]) - conns0
            load = os.getloadavg()
            events: list[list[Any]] = []
            for i in range(args.clients):
                path = log_dir / f"client-{i}-step-{n}.jsonl"
                events += [json.loads(line) for line in path.read_text().splitlines() if line]
            prebanned = {j["uid"] for j in banned_jobs}
            res = replay_e2e(events, settings.VIDEOCHAT_SKIP_TTL_SECONDS, prebanned)
            keys = mm.state_keys()
            left = (r.hlen(keys[2]), r.hlen(keys[1]) - args.waiting)
            summary = e2e_report(
                args,
                rate,
                res,
                events,
                wall,
                server_cpu,
                client_cpu,
                redis_cpu,
                load,
                left,
                conns,
                during,
            )
            summaries.append(summary)
            last = n == len(rates) - 1
            if summary["sustained"] and not args.all_rates and not last:
                print(f"  {rate:g}/s sustained: the ladder stops here", flush=True)
                stop.value = 1
                barrier.wait()
                barrier.wait()
                break
        for p in procs:
            p.join(timeout=60)
            if p.exitcode is None:
                p.kill()
    finally:
        for s in servers:
            stop_server(s)
        cleanup(bench)
        drop_database(args.database_url, run_db)
        if not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    direct: dict[float, dict[str, Any] | None] = {}
    if not args.no_direct:
        for s in summaries:
            print(f"direct mode at {s['rate']:g}/s for comparison:", flush=True)
            direct[s["rate"]] = run_direct_subprocess(args, s["rate"])
    compare(args, summaries, direct, load_before)


def e2e_report(
    args: argparse.Namespace,
    rate: float,
    res: dict[str, Any],
    events: list[list[Any]],
    wall: float,
    server_cpu: list[float],
    client_cpu: list[float],
    redis_cpu: float,
    load: tuple[float, float, float],
    left: tuple[int, int],
    redis_connections: int,
    during: Arrivals,
) -> dict[str, Any]:
    done = [e for e in events if e[0] == "done"]
    opened = [e for e in events if e[0] == "opened"]
    setup_failed = [e for e in events if e[0] == "setup-failed"]
    arrivals = max(1, res["arrivals"])
    seeker, waiter, overall = res["seeker_ms"], res["waiter_ms"], res["overall_ms"]
    sustained = (
        res["arrivals"] >= 0.97 * rate * args.seconds and percentile(seeker, 99) <= SUSTAINED_P99_MS
    )
    v = res["violations"]
    rows: list[list[object]] = [
        ["arrivals (queue.join at its scheduled instant)", res["arrivals"]],
        ["arrival rate achieved (/s)", res["arrivals"] / args.seconds],
        ["arrivals dropped (no idle socket)", sum(e[3] for e in done)],
        ["client send lag behind the schedule: p99 (ms)", percentile(res["send_lag_ms"], 99)],
        ["matched (% of arrivals)", 100 * res["matched"] / arrivals],
        [
            f"left unmatched after {args.leave_after:g} s (% of arrivals)",
            100 * res["left"] / arrivals,
        ],
        ["seeker (role offer): arrival -> match.found p50 (ms)", percentile(seeker, 50)],
        ["seeker (role offer): arrival -> match.found p99 (ms)", percentile(seeker, 99)],
        ["seeker (role offer): max (ms)", seeker[-1] if seeker else float("nan")],
        ["waiting side (role answer): arrival -> match.found p50 (ms)", percentile(waiter, 50)],
        ["waiting side (role answer): arrival -> match.found p99 (ms)", percentile(waiter, 99)],
        ["both sides: p50 (ms)", percentile(overall, 50)],
        ["both sides: p99 (ms)", percentile(overall, 99)],
        [
            "waiting side: waited for a compatible arrival p50 (ms)",
            percentile(res["waited_for_partner_ms"], 50),
        ],
        [
            "waiting side: waited for a compatible arrival p99 (ms)",
            percentile(res["waited_for_partner_ms"], 99),
        ],
        [
            "waiting side: partner's arrival -> match.found p99 (ms)",
            percentile(res["after_partner_ms"], 99),
        ],
        [
            "both sides, the waiting side from its partner's arrival: p99 (ms)",
            percentile(res["system_ms"], 99),
        ],
        ["answer side told after the seeker: p50 (ms)", percentile(res["told_after_ms"], 50)],
        ["answer side told after the seeker: p99 (ms)", percentile(res["told_after_ms"], 99)],
        ["matches / told to both sides", f"{res['matches']:,} / {res['matches_both']:,}"],
        *[
            [f"server process {i + 1} CPU (% of a core)", 100 * c / wall]
            for i, c in enumerate(server_cpu)
        ],
        *[
            [f"client process {i + 1} CPU (% of a core)", 100 * c / wall]
            for i, c in enumerate(client_cpu)
        ],
        ["Redis CPU (% of a core)", 100 * redis_cpu / wall],
        *[
            [f"during the arrivals: server process {i + 1} CPU (% of a core)", pct]
            for i, pct in enumerate(during.server_pct)
        ],
        *[
            [f"during the arrivals: client process {i + 1} CPU (% of a core)", pct]
            for i, pct in enumerate(during.client_pct)
        ],
        [
            f"during the arrivals: machine busy, every process (% of {os.cpu_count()} cores)",
            during.machine_pct,
        ],
        ["Redis connections opened during the step", redis_connections],
        ["server CPU per arrival, all processes (ms)", 1000 * sum(server_cpu) / arrivals],
        ["client CPU per arrival, all processes (ms)", 1000 * sum(client_cpu) / arrivals],
        ["users banned during the step (socket closed 4403)", res["bans"]],
        ["pairs skipped (next) and seen by the partner", res["skips"]],
        *[[f"violations: {k}", n] for k, n in v.items()],
        [
            "client errors / error frames",
            f"{res['error_count']} {' '.join(res['errors'])} / {res['error_frames']}".strip(),
        ],
        ["pairs / waiting entries left in Redis after the step", f"{left[0]} / {left[1]}"],
    ]
    if opened:
        rows.insert(0, ["sockets open (hello done)", sum(e[2] for e in opened)])
    if setup_failed:
        rows.insert(1, ["sockets that failed to open", len(setup_failed)])
    title = (
        f"Matchmaking end to end: {rate:,.0f} arrivals/s for {args.seconds:g} s, {args.clients} "
        f"client processes -> /ws/videochat/ on {args.procs} uvicorn processes (PostgreSQL, "
        f"Redis); {args.waiting:,} unmatchable users waiting first; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end (os.getloadavg, "
        f"{os.cpu_count()} CPUs)"
    )
    print(table(title, ["measure", "value"], rows), flush=True)
    for trail in res["doubles"]:  # the user's own frames, in the log's order
        print("double match, the user's log:", json.dumps(trail))
    for e in events:
        if e[0] == "refusal":
            print(f"a banned user's connect (user {e[1]}) did not end as a refusal: {e[2]}")
    return {
        "rate": rate,
        "achieved": res["arrivals"] / args.seconds,
        "seeker_p50": percentile(seeker, 50),
        "seeker_p99": percentile(seeker, 99),
        "all_p50": percentile(overall, 50),
        "all_p99": percentile(overall, 99),
        "system_p99": percentile(res["system_ms"], 99),
        "violations": sum(v.values()),
        "server_cpu": [100 * c / wall for c in server_cpu],
        "client_cpu": [100 * c / wall for c in client_cpu],
        "server_cpu_ms": 1000 * sum(server_cpu) / arrivals,
        "client_cpu_ms": 1000 * sum(client_cpu) / arrivals,
        "sustained": sustained,
        "load": load[0],
        "redis_connections": redis_connections,
        "during": during,
    }


def compare(
    args: argparse.Namespace,
    e2e: list[dict[str, Any]],
    direct: dict[float, dict[str, Any] | None],
    load_before: tuple[float, float, float],
) -> None:
    rows: list[list[object]] = []
    for s in e2e:
        d = direct.get(s["rate"])
        rows.append(
            [
                f"{s['rate']:,.0f}",
                "e2e",
                s["achieved"],
                s["seeker_p50"],
                s["seeker_p99"],
                s["all_p50"],
                s["all_p99"],
                s["violations"],
                f"{s['load']:.2f}",
                "yes" if s["sustained"] else "no",
            ]
        )
        if d is not None:
            rows.append(
                [
                    f"{d['rate']:,.0f}",
                    "direct (Lua)",
                    d["achieved"],
                    d["seeker_p50"],
                    d["seeker_p99"],
                    d["all_p50"],
                    d["all_p99"],
                    d["violations"],
                    f"{d['load']:.2f}",
                    "yes" if d["seeker_p99"] <= SUSTAINED_P99_MS else "no",
                ]
            )
            rows.append(
                [
                    "",
                    "ratio e2e / direct",
                    s["achieved"] / max(1e-9, d["achieved"]),
                    s["seeker_p50"] / max(1e-9, d["seeker_p50"]),
                    s["seeker_p99"] / max(1e-9, d["seeker_p99"]),
                    s["all_p50"] / max(1e-9, d["all_p50"]),
                    s["all_p99"] / max(1e-9, d["all_p99"]),
                    "",
                    "",
                    "",
                ]
            )
    headers = [
        "rate /s",
        "mode",
        "achieved /s",
        "seeker p50 ms",
        "seeker p99 ms",
        "both sides p50 ms",
        "both sides p99 ms",
        "violations",
        "load (1 min)",
        f"sustained (p99 <= {SUSTAINED_P99_MS:.0f} ms)",
    ]
    after = os.getloadavg()
    print()
    print(
        table(
            f"End to end vs direct (times from the scheduled arrival); load average before "
            f"{load_before[0]:.2f}, after {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} "
            f"({os.cpu_count()} CPUs)",
            headers,
            rows,
        )
    )
    best = [s for s in e2e if s["sustained"]]
    if best:
        top = max(best, key=lambda s: s["rate"])
        print(
            f"highest rate sustained end to end: {top['rate']:,.0f}/s, seeker p50 "
            f"{top['seeker_p50']:.1f} ms / p99 {top['seeker_p99']:.1f} ms"
        )
    else:
        print("no rate tried was sustained end to end")
    for s in e2e:
        print(
            f"  {s['rate']:,.0f}/s: server processes at "
            + ", ".join(f"{c:.0f} %" for c in s["server_cpu"])
            + " of a core, client processes at "
            + ", ".join(f"{c:.0f} %" for c in s["client_cpu"])
            + f"; server CPU {s['server_cpu_ms']:.2f} ms / client CPU "
            + f"{s['client_cpu_ms']:.2f} ms per arrival; "
            + f"{s['redis_connections']:,} Redis connections opened"
        )
        d = s["during"]
        print(
            "    during the arrivals alone: server processes at "
            + ", ".join(f"{c:.0f} %" for c in d.server_pct)
            + ", client processes at "
            + ", ".join(f"{c:.0f} %" for c in d.client_pct)
            + f" of a core; the machine {d.machine_pct:.0f} % busy (of {os.cpu_count()} cores)"
        )
    ok = any(s["sustained"] and s["rate"] >= 1000 for s in e2e) and not any(
        s["violations"] for s in e2e
    )
    print(
        f"target: 1,000 arrivals/s end to end, p99 <= {P99_TARGET_MS:.0f} ms when a partner waits, "
        "zero violations: " + ("met" if ok and e2e[0]["seeker_p99"] <= P99_TARGET_MS else "NOT met")
    )


if __name__ == "__main__":
    main()
