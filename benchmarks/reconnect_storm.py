"""Reconnect storm: after a deploy or a crash every CBLINE client reconnects at the same
instant and rejoins its channel.

`--sockets` (5,000) users, each with a login session and its device (the way a browser
holds them), members of channels of `--members` (50). Two uvicorn processes of the real app
(`config.asgi:application`, PostgreSQL, Redis) are started; then `--clients` (2) client
processes open every socket at once (no pacing: a storm), each sending `channel.join` as
soon as its handshake completes. Per socket: time from the storm's start to its
`channel.joined`. Reported: the time until every socket is back, connects+joins per second
over that time, p50/p99/max per socket, failures, and server CPU per socket; the same storm
against a bare `websockets` server (benchmarks/ptt_fanout.py's relay: same handshake and
join reply, no Django, no auth, no database) at the same process count is the anchor.

    .venv/bin/python benchmarks/reconnect_storm.py --quick          # 300 sockets, smoke
    .venv/bin/python benchmarks/reconnect_storm.py                  # 5,000 sockets
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    ROOT,
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

TARGET_PER_SECOND = 500.0


def make_fixtures(sockets: int, members: int) -> tuple[list[str], list[int]]:
    """Users with sessions and devices, channels and memberships, written straight to the
    database (setup, not the code under test). Returns (cookie, channel id) per socket."""
    import django

    django.setup()
    from accounts.models import Profile, User
    from voice.models import Channel, ChannelMembership

    tag = os.environ["REDIS_KEY_PREFIX"].rstrip(":")
    User.objects.bulk_create(
        [User(email=f"{tag}-{i}@example.com", password="!bench") for i in range(sockets)],
        batch_size=500,
    )
    people = list(User.objects.filter(email__startswith=f"{tag}-").order_by("pk"))
    Profile.objects.bulk_create([Profile(user=u, nickname=f"s{u.pk}") for u in people], 500)
    cookies = sessions_with_devices(people)
    count = (sockets + members - 1) // members
    Channel.objects.bulk_create([Channel(name=f"{tag}-{i}") for i in range(count)], 500)
    chans = list(Channel.objects.filter(name__startswith=f"{tag}-").order_by("pk"))
    ChannelMembership.objects.bulk_create(
        [ChannelMembership(channel=chans[i // members], user=u) for i, u in enumerate(people)],
        batch_size=500,
    )
    return cookies, [chans[i // members].pk for i in range(sockets)]


def own_database(url: str) -> str:
    """A throwaway database on the same PostgreSQL server (dropped at the end), so the run
    never writes into a database anyone else uses."""
    import psycopg

    name = f"bench_storm_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def drop_database(url: str, run_url: str) -> None:
    import psycopg

    name = urlsplit(run_url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- client processes
def client_main(jobs: list[tuple[str, str, int]], barrier: Any, start_at: Any, out: str) -> None:
    asyncio.run(_client(jobs, barrier, start_at, out))


async def _client(jobs: list[tuple[str, str, int]], barrier: Any, start_at: Any, out: str) -> None:
    import websockets

    results: list[tuple[float, str]] = []
    socks: list[Any] = []

    async def one(url: str, cookie: str, channel_id: int) -> None:
        try:
            ws = await websockets.connect(
                url,
                additional_headers={"Cookie": f"sessionid={cookie}"},
                origin="http://127.0.0.1",  # type: ignore[arg-type]
                compression=None,
                open_timeout=None,
                ping_interval=None,
                close_timeout=1,
            )
            socks.append(ws)
            await ws.send(json.dumps({"type": "channel.join", "channel_id": channel_id}))
            async for msg in ws:
                if isinstance(msg, str) and '"channel.joined"' in msg:
                    results.append((time.monotonic() - start_at.value, ""))
                    break
                if isinstance(msg, str) and '"error"' in msg:
                    results.append((time.monotonic() - start_at.value, msg[:80]))
                    break
            else:
                results.append((time.monotonic() - start_at.value, "closed"))
        except Exception as exc:  # counted and shown: the storm must finish to report
            results.append((time.monotonic() - start_at.value, type(exc).__name__))

    await asyncio.to_thread(barrier.wait)  # every client process is up
    await asyncio.to_thread(barrier.wait)  # the start time is written
    delay = start_at.value - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    cpu0 = time.process_time()
    await asyncio.gather(*(one(*job) for job in jobs))
    cpu = time.process_time() - cpu0
    Path(out).write_text(json.dumps({"results": results, "cpu": cpu}))
    await asyncio.to_thread(barrier.wait)  # everyone measured: now close
    await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)


def storm(
    servers: list[Server], cookies: list[str], channels: list[int], clients: int, tag: str
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier, start_at = ctx.Barrier(clients + 1, timeout=600), ctx.Value("d", 0.0)
    outs = [str(ROOT / "var" / f"bench-storm-{tag}-{i}.json") for i in range(clients)]
    jobs: list[list[tuple[str, str, int]]] = [[] for _ in range(clients)]
    for i, (cookie, channel) in enumerate(zip(cookies, channels, strict=True)):
        url = f"{servers[i % len(servers)].ws_url}/ws/cbline/"
        jobs[i % clients].append((url, cookie, channel))
    procs = [
        ctx.Process(target=client_main, args=(jobs[i], barrier, start_at, outs[i]))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    cpu0 = sum(cpu_seconds(s.process.pid) for s in servers)
    start_at.value = time.monotonic() + 0.3
    barrier.wait()
    barrier.wait()  # all measured
    server_cpu = sum(cpu_seconds(s.process.pid) for s in servers) - cpu0
    for p in procs:
        p.join(timeout=60)
        if p.exitcode is None:
            p.kill()
    results: list[tuple[float, str]] = []
    client_cpu = 0.0
    for out in outs:
        data = json.loads(Path(out).read_text())
        results += [tuple(r) for r in data["results"]]
        client_cpu += data["cpu"]
        Path(out).unlink()
    return {"results": results, "server_cpu": server_cpu, "client_cpu": client_cpu}


def row(kind: str, procs: int, r: dict[str, Any]) -> list[object]:
    ok = sorted(t * 1000 for t, err in r["results"] if not err)
    failed = [err for _, err in r["results"] if err]
    n = len(r["results"])
    back = max((t for t, _ in r["results"]), default=float("nan"))
    return [
        kind,
        procs,
        n,
        len(failed),
        back,
        len(ok) / back if back else 0.0,
        percentile(ok, 50),
        percentile(ok, 99),
        ok[-1] if ok else float("nan"),
        1000 * r["server_cpu"] / max(1, n),
        1000 * r["client_cpu"] / max(1, n),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sockets", type=int, default=5000)
    ap.add_argument("--members", type=int, default=50, help="members per channel")
    ap.add_argument("--procs", type=int, default=2, help="server processes (both kinds)")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    ap.add_argument("--quick", action="store_true", help="300 sockets: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.sockets = 300
    if not args.database_url.startswith("postgres"):
        raise SystemExit("the storm runs on PostgreSQL: set DATABASE_URL or --database-url")

    run_db = own_database(args.database_url)
    bench = bench_env(run_db, args.redis_url)
    bench.apply()
    load_before = os.getloadavg()
    print(f"storm {bench.run_id}: migrating, {args.sockets} users", flush=True)
    migrate(bench)
    cookies, channels = make_fixtures(args.sockets, args.members)
    rows, notes = [], []
    bare_cmd = [sys.executable, str(ROOT / "benchmarks" / "ptt_fanout.py"), "--bare-server"]
    kinds = ["uvicorn", *([] if args.no_bare else ["bare"])]
    try:
        for kind in kinds:
            servers = [
                start_server(kind, bench.env, cmd=bare_cmd if kind == "bare" else None)
                for _ in range(args.procs)
            ]
            try:
                r = storm(servers, cookies, channels, args.clients, f"{bench.run_id}-{kind}")
            finally:
                for s in servers:
                    stop_server(s)
            rows.append(row(kind, args.procs, r))
            errors: dict[str, int] = {}
            for _, err in r["results"]:
                if err:
                    errors[err] = errors.get(err, 0) + 1
            if errors:
                notes.append(f"{kind}: failures {errors}")
            print(f"  {kind}: back in {rows[-1][4]:.2f} s", flush=True)
    finally:
        cleanup(bench)
        drop_database(args.database_url, run_db)
    headers = [
        "server",
        "procs",
        "sockets",
        "failed",
        "all back (s)",
        "connects+joins/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU ms/socket",
        "client CPU ms/socket",
    ]
    print()
    print(
        table(
            f"Reconnect storm: {args.sockets:,} authenticated sockets connect and join at once "
            f"(channels of {args.members}), {args.clients} client processes, PostgreSQL",
            headers,
            rows,
        )
    )
    if len(rows) == 2:
        print(f"ratio ours/bare connects+joins/s: {rows[0][5] / rows[1][5]:.3f}")
    for note in notes:
        print(note)
    rate = float(rows[0][5])  # type: ignore[arg-type]
    verdict = "met" if rate >= TARGET_PER_SECOND and not rows[0][3] else "NOT met"
    print(f"target >= {TARGET_PER_SECOND:.0f} connects+joins/s, none failed: {verdict}")
    after = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
        f"after {after[0]:.2f} (1 min)"
    )


if __name__ == "__main__":
    main()
