"""What a queue entry costs the server in Redis round trips and SQL queries, counted on the
real ASGI app and real Redis (CPU is the benchmark's: benchmarks/matchmaking.py)."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from realtime import events
from realtime.redis import get_redis
from tests.videochat.helpers import close_all, join, ready, redis_round_trips
from tests.waiting import until
from videochat import matchmaking as mm

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripts_loaded() -> None:
    """A server meeting a script for the first time costs two extra requests (NOSCRIPT, then
    SCRIPT LOAD) once; the counts here are the steady state."""
    get_redis().script_load(mm.LUA_SOURCE)
    get_redis().script_load(events._SPECIFIC_SEND_LUA)


async def test_an_arrival_costs_one_round_trip_to_wait_or_to_match(amake_user, queries):
    waiting, seeker = await amake_user(), await amake_user()
    a, _ = await ready(waiting)
    b, _ = await ready(seeker)
    queries.clear()

    # Waiting: one matchmaking step (no rate-limit call, no separate expected-wait read).
    with redis_round_trips() as sent:
        assert (await join(a))["type"] == "queue.waiting"
    assert len(sent) == 1, sent

    # Matched: the seeker's step (the partner's card comes with it). The event to the
    # partner's socket, on this process, goes in memory
    # (test_an_event_to_a_partner_socket_skips_the_layers_queue), and the answer side trusts
    # it without asking whether the pair stands (test_matching: the stale ones it drops).
    with redis_round_trips() as sent:
        assert (await join(b))["type"] == "match.found"
        assert (await a.receive_json_from(timeout=3))["type"] == "match.found"
    assert len(sent) == 1, sent
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

    # Next: one step ends the match (a skip) and queues b again; a, told in memory (same
    # process), puts itself back in line with its own single step.
    with redis_round_trips() as sent:
        await b.send_json_to({"type": "next"})
        assert (await b.receive_json_from(timeout=3))["type"] == "queue.waiting"
        assert (await a.receive_json_from(timeout=3))["type"] == "match.ended"
        assert (await a.receive_json_from(timeout=3))["type"] == "queue.waiting"
    assert len(sent) == 2, sent

    with redis_round_trips() as sent:
        await a.send_json_to({"type": "queue.leave"})
        assert (await a.receive_json_from(timeout=3))["type"] == "queue.left"
    assert len(sent) == 1, sent
    assert queries == []
    await close_all(a, b)


async def test_an_event_to_a_partner_socket_skips_the_layers_queue(amake_user):
    """The events "matched" and "ended" to a partner on the same process are handed over in
    memory: no PUBLISH and no read of it back, nothing through the layer's sorted set (a pop,
    a backup copy and its clean-up per message). Half of the partners are such on two
    processes."""
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
    assert [p for p in sent if b"PUBLISH" in p or b"ZADD" in p] == []
    await close_all(a, b)


async def test_an_event_to_a_socket_of_another_process_is_one_publish():
    """A partner on another process gets the event through its process's subscription."""
    from channels.layers import get_channel_layer

    from realtime.layers import LeanRedisChannelLayer
    from videochat import events as vc_events

    layer = get_channel_layer()
    other = LeanRedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    try:
        name = await other.new_channel()
        waiting = other.receive(name)  # the other process subscribes
        event = vc_events.Ended(match_id="m", from_id=1, reason="left")
        await until(lambda: layer.send_direct(name, {"type": "x.warm"}), what="subscribed")
        assert (await waiting)["type"] == "x.warm"
        waiting = other.receive(name)
        with redis_round_trips() as sent:
            await events.send_to(name, event)
        assert [b"PUBLISH" in p for p in sent] == [True]
        assert await waiting == event.model_dump(mode="json")
    finally:
        await other.close_pools()


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
