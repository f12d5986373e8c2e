"""Matchmaking against the real Redis: filters both ways, arrival order, skips, deadlines,
clean leaving, and concurrent arrivals from many tasks and from two OS processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import re
from collections.abc import Iterable
from itertools import combinations
from typing import Any

import pytest
from django.conf import settings
from redis.crc import key_slot

from realtime.redis import get_redis
from tests.videochat.clock import advance_matchmaking_clock
from videochat import matchmaking as mm
from videochat.matchmaking import Match, Seeker

# Deadlines in the tests about one passing. The tests move matchmaking's clock rather than
# wait (advance_matchmaking_clock), so this only needs to be long enough that a busy machine
# does not run past one by accident, and shorter than the other deadlines left at defaults.
SHORT_TTL = 10.0


def seeker(
    uid: int,
    gender: str = "",
    country: str = "",
    want_gender: str | None = None,
    want_country: str | None = None,
) -> Seeker:
    return Seeker(uid, f"specific.test!{uid}", gender, country, want_gender, want_country)


def compatible(a: Seeker, b: Seeker) -> bool:
    """The rule, written independently of the script: each side's filters accept the other."""

    def accepts(x: Seeker, y: Seeker) -> bool:
        return (x.want_gender is None or x.want_gender == y.gender) and (
            x.want_country is None or x.want_country == y.country
        )

    return a.user_id != b.user_id and accepts(a, b) and accepts(b, a)


def run_keys() -> list[bytes]:
    r = get_redis()
    return sorted(r.scan_iter(match=settings.REDIS_KEY_PREFIX + "*", count=1000))


def redis_mentions(uid: int) -> list[str]:
    """Every key, field, value or member of this run that still names `uid`. The time-to-match
    averages are left out: they hold no ids, only filter classes and durations."""
    r, found, needle = get_redis(), [], str(uid).encode()
    for k in run_keys():
        if k == mm.state_keys()[5].encode():
            continue
        kind = r.type(k)
        items: Iterable[bytes] = []
        if kind == b"hash":
            items = [f + b"=" + v for f, v in r.hgetall(k).items()]
        elif kind == b"zset":
            items = r.zrange(k, 0, -1)
        found += [f"{k!r}: {i!r}" for i in items if needle in re.split(rb"[|:=!]", i)]
    return found


async def pair_up(a: Seeker, b: Seeker) -> Match:
    assert await mm.enqueue(a) is None
    match = await mm.enqueue(b)
    assert match is not None and match.partner_id == a.user_id
    return match


# --- Filters, both ways.
FILTER_CASES = [
    # (waiting, arriving, expected to pair)
    (seeker(1, "f", "US"), seeker(2, "m", "DE"), True),
    (seeker(1, "f", "US", want_gender="m"), seeker(2, "m", "DE"), True),
    (seeker(1, "f", "US", want_gender="f"), seeker(2, "m", "DE"), False),  # waiting one refuses
    (seeker(1, "f", "US"), seeker(2, "m", "DE", want_gender="m"), False),  # arriving one refuses
    (seeker(1, "f", "US", want_gender="m"), seeker(2, "m", "DE", want_gender="f"), True),
    (seeker(1, "f", "US", want_gender="f"), seeker(2, "f", "DE", want_gender="f"), True),
    (seeker(1, "x", "US"), seeker(2, "m", "DE", want_gender="f"), False),
    (seeker(1, "", "US"), seeker(2, "m", "DE", want_gender="m"), False),  # unknown is not "m"
    (seeker(1, "f", "US"), seeker(2, "", "", want_gender="f"), True),
    (seeker(1, "f", "US", want_gender="m"), seeker(2, "", "DE"), False),
    (seeker(1, "f", "US", want_country="DE"), seeker(2, "m", "DE"), True),
    (seeker(1, "f", "US", want_country="FR"), seeker(2, "m", "DE"), False),
    (seeker(1, "f", "US"), seeker(2, "m", "DE", want_country="US"), True),
    (seeker(1, "f", "US"), seeker(2, "m", "DE", want_country="BR"), False),
    (seeker(1, "f", ""), seeker(2, "m", "DE", want_country="US"), False),  # unknown country
    (seeker(1, "f", "US", want_country="DE"), seeker(2, "m", "", want_gender="f"), False),
    (seeker(1, "f", "US", "m", "DE"), seeker(2, "m", "DE", "f", "US"), True),
    (seeker(1, "f", "US", "m", "DE"), seeker(2, "m", "DE", "f", "FR"), False),
    (seeker(1, "f", "US", "m", "DE"), seeker(2, "m", "FR", "f", "US"), False),
    (seeker(1, "m", "US", "m", "US"), seeker(2, "m", "US", "m", "US"), True),
]


@pytest.mark.parametrize(("waiting", "arriving", "pairs"), FILTER_CASES)
async def test_filters_are_honoured_both_ways(
    waiting: Seeker, arriving: Seeker, pairs: bool
) -> None:
    assert compatible(waiting, arriving) is pairs  # the table itself is right
    assert await mm.enqueue(waiting) is None
    match = await mm.enqueue(arriving)
    if pairs:
        assert match is not None
        assert (match.partner_id, match.partner_channel_name) == (1, "specific.test!1")
        assert (match.partner_gender, match.partner_country) == (waiting.gender, waiting.country)
        assert (await mm.partner_of(1))[1:] == (2, "specific.test!2")  # type: ignore[index]
        assert (await mm.partner_of(2))[1:] == (1, "specific.test!1")  # type: ignore[index]
    else:
        assert match is None
        assert await mm.partner_of(1) is None and await mm.partner_of(2) is None


async def test_longest_waiting_compatible_user_is_chosen_across_buckets() -> None:
    # Four men none of whom accepts another, each in a different bucket of the index (their
    # own filters differ), and one who refuses a woman from the US, arriving first.
    await mm.enqueue(seeker(10, "m", "US", "f", "BR"))
    await mm.enqueue(seeker(14, "m", "US", "f", "US"))
    await mm.enqueue(seeker(13, "m", "US", None, "US"))
    await mm.enqueue(seeker(11, "m", "DE", None, None))
    await mm.enqueue(seeker(12, "m", "DE", "f", None))
    assert get_redis().hlen(mm.state_keys()[1]) == 5
    partners = [await mm.enqueue(seeker(20 + i, "f", "US")) for i in range(5)]
    assert [p.partner_id if p else None for p in partners] == [14, 13, 11, 12, None]


async def test_never_matched_with_oneself_and_reenqueue_keeps_one_entry() -> None:
    me = seeker(1, "f", "US")
    assert await mm.enqueue(me) is None
    assert await mm.enqueue(me) is None
    assert await mm.enqueue(seeker(1, "f", "US", want_country="US")) is None
    r = get_redis()
    wait, idx = mm.state_keys()[1], mm.state_keys()[0]
    assert r.hlen(wait) == 1
    members = r.zrange(idx, 0, -1)
    # Indexed under own attributes x the new filters only: {f, *} x {US, *}.
    assert len(members) == 4 and all(m.endswith(b"|1") and b"/*/US|" in m for m in members)


async def test_reenqueue_keeps_the_place_in_line() -> None:
    await mm.enqueue(seeker(1, "m", "US"))
    await mm.enqueue(seeker(2, "m", "US"))
    await mm.enqueue(seeker(1, "m", "US"))  # "join" sent again: still first
    assert (await mm.enqueue(seeker(3, "f", "US"))).partner_id == 1  # type: ignore[union-attr]


async def test_reenqueue_while_paired_dissolves_the_old_pair() -> None:
    first = await pair_up(seeker(1), seeker(2))
    assert await mm.enqueue(seeker(2)) is None  # 1 is paired no more, but not waiting either
    assert await mm.partner_of(1) is None and await mm.partner_of(2) is None
    second = await mm.enqueue(seeker(3))
    assert second is not None and second.partner_id == 2
    assert second.match_id != first.match_id
    assert await mm.last_partner(1) == 2


async def test_end_match_dissolves_both_sides_and_names_the_ex_partner() -> None:
    match = await pair_up(seeker(1, "f", "US"), seeker(2, "m", "DE"))
    assert await mm.partner_of(1) == (match.match_id, 2, "specific.test!2")
    assert await mm.end_match(2, skip=False) == (match.match_id, 1, "specific.test!1")
    assert await mm.partner_of(1) is None and await mm.partner_of(2) is None
    assert await mm.end_match(1, skip=False) is None  # the partner's side is gone too
    assert await mm.end_match(2, skip=True) is None  # idempotent
    assert await mm.last_partner(1) == 2 and await mm.last_partner(2) == 1
    # Not skipped: the two may meet again.
    await pair_up(seeker(1, "f", "US"), seeker(2, "m", "DE"))


async def test_match_ids_are_unguessable_and_distinct() -> None:
    ids = set()
    for i in range(0, 40, 2):
        ids.add((await pair_up(seeker(i), seeker(i + 1))).match_id)
    assert len(ids) == 20 and all(len(i) >= 22 for i in ids)


async def test_skip_prevents_repairing_for_the_skip_ttl_then_expires(settings: Any) -> None:
    settings.VIDEOCHAT_SKIP_TTL_SECONDS = SHORT_TTL
    await pair_up(seeker(1, "f", "US"), seeker(2, "m", "US"))
    assert await mm.end_match(1, skip=True) is not None  # 1 pressed "next"
    # Neither the skipper nor the skipped one gets the other back, whoever arrives first.
    assert await mm.enqueue(seeker(2, "m", "US")) is None
    assert await mm.enqueue(seeker(1, "f", "US")) is None
    # Somebody else is still fine for both.
    assert (await mm.enqueue(seeker(3, "x", "BR"))).partner_id == 2  # type: ignore[union-attr]
    assert await mm.end_match(3, skip=False)
    assert await mm.enqueue(seeker(2, "m", "US", want_gender="f")) is None  # waits behind 1
    await advance_matchmaking_clock(SHORT_TTL - 1)
    assert await mm.enqueue(seeker(2, "m", "US", want_gender="f")) is None  # not yet
    await advance_matchmaking_clock(1.1)
    # After the TTL, 2 (re-enqueueing, same filters) finds 1 waiting.
    assert (await mm.enqueue(seeker(2, "m", "US", want_gender="f"))).partner_id == 1  # type: ignore[union-attr]


async def test_skipped_user_is_passed_over_not_blocking_the_queue(settings: Any) -> None:
    settings.VIDEOCHAT_SKIP_TTL_SECONDS = 60
    await pair_up(seeker(1, "f", "US", "m"), seeker(2, "m", "US"))
    await mm.end_match(2, skip=True)
    await mm.enqueue(seeker(1, "f", "US", "m"))  # oldest waiting, but skipped with 2
    await mm.enqueue(seeker(3, "f", "DE", "m"))
    assert (await mm.enqueue(seeker(2, "m", "US"))).partner_id == 3  # type: ignore[union-attr]
    assert (await mm.enqueue(seeker(4, "m", "FR"))).partner_id == 1  # type: ignore[union-attr]


async def test_last_partner_is_forgotten_after_its_ttl(settings: Any) -> None:
    settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS = SHORT_TTL
    await pair_up(seeker(1), seeker(2))
    assert await mm.last_partner(1) is None  # current partner: partner_of, not last_partner
    await mm.end_match(1, skip=False)
    assert await mm.last_partner(2) == 1
    await advance_matchmaking_clock(SHORT_TTL - 1)
    assert await mm.last_partner(1) == 2 and await mm.last_partner(2) == 1  # not yet
    await advance_matchmaking_clock(1.1)
    assert await mm.last_partner(1) is None and await mm.last_partner(2) is None
    await mm.sweep()
    assert redis_mentions(1) == [] and redis_mentions(2) == []
    assert run_keys() == [mm.state_keys()[5].encode()], "only the anonymous wait averages"


async def test_dequeue_leaves_no_keys_behind_and_is_idempotent() -> None:
    people = [
        seeker(1, "f", "US", "m", "DE"),
        seeker(2, "m", "FR", "f", "BR"),
        seeker(3, "x", "", "m", None),
        seeker(4, "", "IN", None, "US"),
    ]
    assert not any(compatible(a, b) for a, b in combinations(people, 2))
    for s in people:
        assert await mm.enqueue(s) is None
    assert len(run_keys()) == 3  # index, waiting entries, deadlines
    for s in people:
        await mm.dequeue(s.user_id)
        assert redis_mentions(s.user_id) == []
        await mm.dequeue(s.user_id)
    assert run_keys() == []


async def test_disconnect_while_waiting_leaves_the_queue_clean() -> None:
    await mm.enqueue(seeker(1, "f", "US", "m"))
    await mm.enqueue(seeker(2, "f", "US", "m"))
    await mm.dequeue(1)  # tab closed
    assert (await mm.enqueue(seeker(3, "m", "US"))).partner_id == 2  # type: ignore[union-attr]
    assert await mm.enqueue(seeker(4, "m", "US")) is None  # 1 is not offered
    assert redis_mentions(1) == []


async def test_dequeue_does_not_touch_a_pair() -> None:
    match = await pair_up(seeker(1), seeker(2))
    await mm.dequeue(1)
    assert await mm.partner_of(1) == (match.match_id, 2, "specific.test!2")


async def test_waiting_entry_of_a_dead_process_expires_unless_heartbeating(settings: Any) -> None:
    settings.VIDEOCHAT_WAIT_TTL_SECONDS = SHORT_TTL
    await mm.enqueue(seeker(1))  # its process will "die": no heartbeat
    await mm.enqueue(seeker(2, want_gender="f"))  # alive, heartbeating
    assert not await mm.heartbeat(3)  # nobody
    for _ in range(4):  # 1.4 x the TTL in all
        await advance_matchmaking_clock(SHORT_TTL * 0.35)
        assert await mm.heartbeat(2)
    # 1 is past its deadline: skipped even before a sweep, and removed on the way.
    assert await mm.enqueue(seeker(4)) is None
    assert redis_mentions(1) == []
    assert (await mm.enqueue(seeker(5, "f"))).partner_id == 2  # type: ignore[union-attr]


async def test_pair_nobody_ends_expires(settings: Any) -> None:
    settings.VIDEOCHAT_PAIR_TTL_SECONDS = SHORT_TTL
    await pair_up(seeker(1), seeker(2))
    await advance_matchmaking_clock(SHORT_TTL * 0.6)
    assert await mm.heartbeat(1) and await mm.heartbeat(2)
    await advance_matchmaking_clock(SHORT_TTL * 0.6)
    assert await mm.partner_of(1) is not None  # kept alive by the heartbeats
    assert await mm.heartbeat(1)  # ... but 2's process has died
    await advance_matchmaking_clock(SHORT_TTL * 0.6)
    # A pair is over when either side's deadline passes.
    assert await mm.partner_of(1) is None and await mm.partner_of(2) is None
    await mm.sweep()
    assert get_redis().hlen(mm.state_keys()[2]) == 0, "no pair left in Redis"
    assert not [m for m in get_redis().zrange(mm.state_keys()[4], 0, -1) if m.startswith(b"p:")]


async def test_expected_wait_comes_from_recent_matches() -> None:
    alice = seeker(1, "f", "US", want_gender="m")
    assert await mm.expected_wait(alice) is None
    await mm.enqueue(alice)
    await advance_matchmaking_clock(0.2)  # alice waits 0.2 s
    await mm.enqueue(seeker(2, "m", "DE"))
    wait = await mm.expected_wait(alice)
    assert wait is not None and 0.2 <= wait < 5
    assert await mm.expected_wait(seeker(3, "f", "US", want_gender="f")) is None  # other class


def test_sync_twins_share_the_queue_with_async() -> None:
    assert mm.enqueue_sync(seeker(1, "f")) is None
    match = mm.enqueue_sync(seeker(2, "m", want_gender="f"))
    assert match is not None and match.partner_id == 1
    assert mm.partner_of_sync(1) == (match.match_id, 2, "specific.test!2")
    assert mm.end_match_sync(1, skip=True) == (match.match_id, 2, "specific.test!2")
    assert mm.last_partner_sync(2) == 1
    mm.enqueue_sync(seeker(3))
    mm.dequeue_sync(3)
    assert mm.sweep_sync() == 0


def test_the_beat_task_forgets_who_chatted_with_whom_once_the_deadline_passes(
    settings: Any,
) -> None:
    # Imported here: this module must import without Django set up (the spawned workers
    # below unpickle _worker from it before django.setup()), and tasks loads models.
    from videochat import tasks

    settings.VIDEOCHAT_SKIP_TTL_SECONDS = settings.VIDEOCHAT_LAST_PARTNER_TTL_SECONDS = 600
    for a, b in ((1, 2), (3, 4)):
        assert mm.enqueue_sync(seeker(a)) is None
        assert mm.enqueue_sync(seeker(b)) is not None
        assert mm.end_match_sync(a, skip=True) is not None  # "next": last partner and a skip
    # Move time for 1 and 2: their last-partner notes and their skip ran out a second ago.
    r = get_redis()
    seconds, micros = r.time()
    past = seconds * 1000 + micros // 1000 - 1000
    r.zadd(mm.state_keys()[4], {"l:1": past, "l:2": past, "s:1:2": past})
    # Nobody else queues, so no step sweeps on the way: only the beat task can forget them.
    assert redis_mentions(1) and redis_mentions(2)

    assert tasks.matchmaking_sweep.delay().get() == 3

    assert redis_mentions(1) == [] and redis_mentions(2) == []
    # 3 and 4's notes are within their deadline and stay.
    assert mm.last_partner_sync(4) == 3 and mm.last_partner_sync(3) == 4
    assert any(":3:4" in m for m in redis_mentions(3))
    assert tasks.matchmaking_sweep.delay().get() == 0


def test_the_sweep_runs_every_minute() -> None:
    from config.celery_app import app

    schedules = {e["task"]: e["schedule"] for e in app.conf.beat_schedule.values()}
    assert schedules["videochat.tasks.matchmaking_sweep"] == 60.0


@pytest.mark.parametrize(
    "bad",
    [
        {"gender": "F"},
        {"gender": "female"},
        {"country": "us"},
        {"country": "USA"},
        {"want_gender": "x"},
        {"want_gender": ""},
        {"want_country": ""},
        {"want_country": "u|s"},
        {"channel_name": "a|b"},
        {"channel_name": ""},
    ],
)
def test_malformed_seekers_are_refused(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "user_id": 1,
        "channel_name": "specific.a!b",
        "gender": "f",
        "country": "US",
        "want_gender": None,
        "want_country": None,
    }
    with pytest.raises(ValueError):
        Seeker(**{**fields, **bad})


def test_all_keys_share_one_cluster_slot() -> None:
    keys = mm.state_keys()
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith(settings.REDIS_KEY_PREFIX) for k in keys)


# --- Concurrency: random users, checked against the independent rule.
COUNTRIES = ["US", "DE", "FR", "BR", "IN", ""]


def random_seeker(uid: int, channel_prefix: str = "specific.load!") -> Seeker:
    """Deterministic by uid, so the checker can rebuild what every worker enqueued."""
    rnd = random.Random(uid)
    return Seeker(
        uid,
        f"{channel_prefix}{uid}",
        rnd.choices(["f", "m", "x", ""], [40, 45, 5, 10])[0],
        rnd.choice(COUNTRIES),
        rnd.choices(["f", "m", None], [25, 15, 60])[0],
        rnd.choices([None, *COUNTRIES[:-1]], [80, 8, 4, 4, 2, 2])[0],
    )


def check_matches(
    seekers: dict[int, Seeker],
    matches: list[tuple[int, Match]],
    skipped: set[frozenset[int]] = frozenset(),  # type: ignore[assignment]
    pairs: dict[int, list[str]] | None = None,
) -> None:
    """Each user in at most one of `matches`, filters both ways, no self, no skipped pair,
    and the same pairs recorded symmetrically in Redis."""
    seen: dict[int, str] = {}
    for uid, m in matches:
        a, b = seekers[uid], seekers[m.partner_id]
        assert uid != m.partner_id, "self-match"
        assert compatible(a, b), f"filters broken: {a} with {b}"
        assert frozenset((uid, m.partner_id)) not in skipped, "re-paired within skip TTL"
        assert (m.partner_channel_name, m.partner_gender, m.partner_country) == (
            b.channel_name,
            b.gender,
            b.country,
        )
        for u in (uid, m.partner_id):
            assert u not in seen, f"user {u} in two pairs: {seen[u]} and {m.match_id}"
            seen[u] = m.match_id
    if pairs is None:
        pairs = redis_pairs()
    expected = {}
    for uid, m in matches:
        expected[uid] = [m.match_id, str(m.partner_id), m.partner_channel_name]
        expected[m.partner_id] = [m.match_id, str(uid), seekers[uid].channel_name]
    assert pairs == expected


def redis_pairs() -> dict[int, list[str]]:
    raw = get_redis().hgetall(mm.state_keys()[2])
    return {int(k): v.decode().split("|") for k, v in raw.items()}


def check_nobody_compatible_left_waiting(
    seekers: dict[int, Seeker],
    skipped: set[frozenset[int]] = frozenset(),  # type: ignore[assignment]
) -> int:
    """Whoever arrived second among two compatible waiting users should have been paired."""
    waiting = [int(u) for u in get_redis().hkeys(mm.state_keys()[1])]
    for a, b in combinations(waiting, 2):
        if frozenset((a, b)) not in skipped:
            assert not compatible(seekers[a], seekers[b]), f"{a} and {b} both left waiting"
    return len(waiting)


async def test_many_concurrent_arrivals_in_one_process() -> None:
    seekers = {uid: random_seeker(uid) for uid in range(1, 3001)}
    order = list(seekers.values())
    random.Random(7).shuffle(order)
    gate = asyncio.Semaphore(200)  # many tasks in flight, within the connection pool

    async def arrive(s: Seeker) -> Match | None:
        async with gate:
            return await mm.enqueue(s)

    results = await asyncio.gather(*(arrive(s) for s in order))
    matches = [(s.user_id, m) for s, m in zip(order, results, strict=True) if m is not None]
    assert len(matches) > 1000
    check_matches(seekers, matches)
    waiting = check_nobody_compatible_left_waiting(seekers)
    assert waiting + 2 * len(matches) == len(seekers)
    # Everyone leaves: the queue is empty, nothing of them remains but pairs and stats.
    await asyncio.gather(*(mm.dequeue(uid) for uid in list(seekers)[:1000]))
    await asyncio.gather(*(mm.dequeue(uid) for uid in list(seekers)[1000:]))
    assert get_redis().hlen(mm.state_keys()[1]) == 0
    assert get_redis().zcard(mm.state_keys()[0]) == 0


def _worker(
    index: int, uids: list[int], barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    """One OS process playing one ASGI process: the async interface on its own event loop."""
    import django

    django.setup()
    from videochat import matchmaking as m

    async def enqueue_all(again: bool) -> list[tuple[int, Match]]:
        gate = asyncio.Semaphore(64)
        order = uids[:]
        if again:
            # Round 2: those who pressed "next" come back (they have a last partner); those
            # still waiting since round 1 stay in line. A consumer re-enqueues only a user
            # it knows to be unpaired, so nobody still waiting is enqueued twice.
            order = [u for u in order if await m.last_partner(u) is not None]
        random.Random(index).shuffle(order)

        async def one(uid: int) -> tuple[int, Match | None]:
            async with gate:
                return uid, await m.enqueue(random_seeker(uid))

        done = await asyncio.gather(*(one(u) for u in order))
        return [(u, r) for u, r in done if r is not None]

    async def end_all(matches: list[tuple[int, Match]]) -> None:
        await asyncio.gather(*(m.end_match(u, skip=True) for u, _ in matches))

    barrier.wait()  # both processes start together
    first = asyncio.run(enqueue_all(again=False))
    barrier.wait()  # round 1 done: the test looks at Redis
    asyncio.run(end_all(first))  # everyone presses "next"
    barrier.wait()
    barrier.wait()  # the test has checked that no pair is left
    second = asyncio.run(enqueue_all(again=True))
    out.put((index, first, second))


@pytest.mark.timeout(600)  # two interpreters starting on a busy machine can take a while
def test_two_os_processes_arriving_at_once_pair_everyone_once() -> None:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, like a second server
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    per_process = 2000
    uid_sets = [list(range(1, per_process + 1)), list(range(per_process + 1, 2 * per_process + 1))]
    seekers = {u: random_seeker(u) for us in uid_sets for u in us}
    barrier, out = ctx.Barrier(3, timeout=300), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(i, us, barrier, out)) for i, us in enumerate(uid_sets)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait()
        barrier.wait()
        first_pairs = redis_pairs()  # round 1 done in both processes, no chat ended yet
        barrier.wait()
        assert get_redis().hlen(mm.state_keys()[2]) == 0, "every pair ended on both sides"
        barrier.wait()
        results = [out.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    first = [x for _, f, _ in results for x in f]
    second = [x for _, _, s in results for x in s]
    # Both processes did pair users, including users enqueued by the other process.
    assert all(f for _, f, _ in results)
    by_process = {u: i for i, us in enumerate(uid_sets) for u in us}
    assert any(by_process[u] != by_process[m.partner_id] for u, m in first)
    skipped = {frozenset((u, m.partner_id)) for u, m in first}
    check_matches(seekers, second, skipped)
    check_nobody_compatible_left_waiting(seekers, skipped)
    check_matches(seekers, first, pairs=first_pairs)
