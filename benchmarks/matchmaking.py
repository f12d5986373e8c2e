"""Video chat matchmaking under load: arrivals from two OS processes against one Redis.

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

    .venv/bin/python benchmarks/matchmaking.py --quick
    .venv/bin/python benchmarks/matchmaking.py --rate 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000, help="arrivals per second, all processes")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--waiting", type=int, default=10_000, help="unmatchable users in line first")
    ap.add_argument("--leave-after", type=float, default=3.0, help="seconds before giving up")
    ap.add_argument("--chat-mean", type=float, default=2.0, help="mean chat length, seconds")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--quick", action="store_true", help="300 arrivals/s for 5 s, 1,000 waiting")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.seconds, args.waiting = 300, 5, 1000

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
        report(
            args,
            result,
            done,
            start_at.value,
            (calls1 - calls0, usec1 - usec0),
            left_pairs,
            left_waiting,
            client_cpu=sum(e[2] for e in events if e[0] == "cpu"),
            redis_cpu=rcpu1 - rcpu0,
            load=load,
        )
    finally:
        cleanup(bench)
        if not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)


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


if __name__ == "__main__":
    main()
