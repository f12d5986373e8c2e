"""What a queue entry costs the server in Redis round trips and SQL queries, counted on the
real ASGI app and real Redis (CPU is the benchmark's: benchmarks/matchmaking.py)."""

from __future__ import annotations

import asyncio

import pytest

from realtime import events
from realtime.redis import get_redis
from tests.videochat.helpers import close_all, join, ready, redis_round_trips
from videochat import matchmaking as mm

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripts_loaded() -> None:
    """A server meeting a script for the first time costs two extra requests (NOSCRIPT, then
    SCRIPT LOAD) once; the counts here are the steady state."""
    get_redis().script_load(mm.LUA_SOURCE)
    get_redis().script_load(events._SPECIFIC_SEND_LUA)


async def test_an_arrival_costs_one_round_trip_to_wait_and_three_to_match(amake_user, queries):
    waiting, seeker = await amake_user(), await amake_user()
    a, _ = await ready(waiting)
    b, _ = await ready(seeker)
    queries.clear()

    # Waiting: one matchmaking step (no rate-limit call, no separate expected-wait read).
    with redis_round_trips() as sent:
        assert (await join(a))["type"] == "queue.waiting"
    assert len(sent) == 1, sent

    # Matched: the seeker's step (the partner's card comes with it), the event to the
    # partner's socket in one request, and the answer side's check that the pair is current.
    with redis_round_trips() as sent:
        assert (await join(b))["type"] == "match.found"
        assert (await a.receive_json_from(timeout=3))["type"] == "match.found"
    assert len(sent) == 3, sent
    assert queries == []
    await close_all(a, b)


async def test_next_and_leave_cost_one_step_each(amake_user, queries):
    one, two = await amake_user(), await amake_user()
    a, _ = await ready(one)
    b, _ = await ready(two)
    await join(a)
    await join(b)
    await a.receive_json_from(timeout=3)
    queries.clear()

    # Next: one step ends the match (a skip) and queues b again, one request tells a, whose
    # own single step puts it back in line.
    with redis_round_trips() as sent:
        await b.send_json_to({"type": "next"})
        assert (await b.receive_json_from(timeout=3))["type"] == "queue.waiting"
        assert (await a.receive_json_from(timeout=3))["type"] == "match.ended"
        assert (await a.receive_json_from(timeout=3))["type"] == "queue.waiting"
    assert len(sent) == 3, sent

    with redis_round_trips() as sent:
        await a.send_json_to({"type": "queue.leave"})
        assert (await a.receive_json_from(timeout=3))["type"] == "queue.left"
    assert len(sent) == 1, sent
    assert queries == []
    await close_all(a, b)


async def test_an_event_to_a_partner_socket_skips_the_layers_queue(amake_user):
    """The partner's process subscribes once to its sockets' direct messages: "matched" and
    "ended" reach it with one PUBLISH, not through the layer's sorted set, which costs the
    receiving process a pop, a backup copy and its clean-up per message."""
    one, two = await amake_user(), await amake_user()
    a, _ = await ready(one)
    b, _ = await ready(two)
    with redis_round_trips(upkeep=True) as sent:
        await join(a)
        await join(b)
        assert (await a.receive_json_from(timeout=3))["type"] == "match.found"
        await b.send_json_to({"type": "queue.leave"})
        assert (await b.receive_json_from(timeout=3))["type"] == "queue.left"
        assert (await a.receive_json_from(timeout=3))["type"] == "match.ended"
    backups = [p for p in sent if b"ZADD" in p and b"$inflight" in p]
    assert backups == []
    assert sum(b"PUBLISH" in p for p in sent) == 2
    await close_all(a, b)


async def test_steps_asked_together_go_in_one_request_on_one_connection():
    """Concurrent steps of one process share a request: one request per step took a pooled
    connection each, so a process that fell behind opened a connection per step of its
    backlog (about 4,000 in 5 s for two processes at 1,000 arrivals/s,
    benchmarks/matchmaking.py). Each step still runs alone and answers its own caller."""
    from realtime.redis import get_async_redis

    seekers = [
        mm.Seeker(9_000_000 + i, f"test.batch!{i}", "m" if i % 2 else "f", "US", None, None)
        for i in range(20)
    ]
    pool = get_async_redis().connection_pool
    await mm.partner_of(0)  # one connection made, and the script known
    made = len(pool._available_connections) + len(pool._in_use_connections)
    with redis_round_trips() as sent:
        entries = await asyncio.gather(*(mm.enter(s) for s in seekers))
    assert len(sent) == 1, sent
    assert len(pool._available_connections) + len(pool._in_use_connections) == made
    # In the order asked: each second seeker meets the one before.
    matches = [e.match for e in entries]
    assert all(m is None for m in matches[::2])
    assert [m.partner_id if m else None for m in matches[1::2]] == [s.user_id for s in seekers[::2]]
    for s in seekers:
        await mm.leave(s.user_id)


async def test_steps_a_server_has_no_script_for_load_it_and_run_once(monkeypatch):
    """A fresh or restarted server answers NOSCRIPT: the script is loaded and those steps
    sent again (a new source stands in for the restart; the shared server is left alone)."""
    import hashlib
    import uuid

    source = f"{mm.LUA_SOURCE}\n-- {uuid.uuid4()}\n"
    monkeypatch.setattr(mm, "LUA_SOURCE", source)
    monkeypatch.setattr(mm, "_SHA", hashlib.sha1(source.encode()).hexdigest())  # noqa: S324
    seeker = mm.Seeker(9_100_000, "test.batch!x", "f", "US", None, None)
    entries = await asyncio.gather(mm.enter(seeker), mm.partner_of(seeker.user_id))
    assert entries[0].match is None and entries[1] is None
    assert await mm.leave(seeker.user_id) is None
