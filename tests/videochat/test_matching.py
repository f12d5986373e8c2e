"""videochat.matching, called directly: the session services decide on real Redis and
PostgreSQL, send their events on the real channel layer, and return the frames the consumer
would send. Sockets are channel-layer channels here; nothing of ours is mocked."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from accounts.models import User
from realtime import closecodes
from realtime.errors import ServiceError
from realtime.events import capture_events
from realtime.schemas import ErrorFrame
from tests.factories import UserFactory
from videochat import events, matching, services
from videochat import matchmaking as mm
from videochat.keys import videochat_user_group
from videochat.models import Report
from videochat.schemas import (
    Chat,
    ChatOut,
    Hello,
    MatchEnded,
    MatchFound,
    QueueLeft,
    QueueWaiting,
    Ready,
    Signal,
    SignalOut,
)

pytestmark = pytest.mark.django_db(transaction=True)

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}


async def seat_for(user: Any | None = None, **hello: Any) -> matching.Seat:
    """A seat on a fresh channel of the real layer, that has said hello."""
    user = user or await sync_to_async(UserFactory)()
    name = await get_channel_layer().new_channel()
    seat = await matching.seat_open(user=user, channel_name=name, client_ip="81.2.69.160")
    out = await matching.hello(seat, Hello(type="hello", **hello))
    assert [type(f) for f in out.frames] == [Ready]
    return seat


async def received(seat: matching.Seat) -> dict[str, Any]:
    """The next event the seat's channel got (what its consumer would handle)."""
    return await get_channel_layer().receive(seat.channel_name)


async def paired() -> tuple[matching.Seat, matching.Seat]:
    """a waits, b arrives and offers; a hears of it and answers."""
    a, b = await seat_for(gender="f"), await seat_for(gender="m")
    assert [type(f) for f in (await matching.queue_join(a)).frames] == [QueueWaiting]
    offer = (await matching.queue_join(b)).frames
    assert [type(f) for f in offer] == [MatchFound] and offer[0].role == "offer"  # type: ignore[attr-defined]
    event = events.Matched.model_validate(await received(a))
    assert (event.from_id, event.from_channel) == (b.user_id, b.channel_name)
    answer = (await matching.partner_matched(a, event)).frames
    assert [type(f) for f in answer] == [MatchFound]
    assert answer[0].match_id == offer[0].match_id  # type: ignore[attr-defined]
    assert answer[0].role == "answer" and answer[0].partner.gender == "m"  # type: ignore[attr-defined]
    assert a.match is not None and b.match is not None and not (a.waiting or b.waiting)
    return a, b


async def test_queue_join_needs_hello_and_refuses_a_second_match():
    user = await sync_to_async(UserFactory)()
    name = await get_channel_layer().new_channel()
    seat = await matching.seat_open(user=user, channel_name=name, client_ip=None)
    with pytest.raises(ServiceError) as exc:
        await matching.queue_join(seat)
    assert exc.value.code == "hello_required"
    a, _b = await paired()
    with pytest.raises(ServiceError) as exc:
        await matching.queue_join(a)
    assert exc.value.code == "in_match"


async def test_joining_twice_keeps_the_place_in_line():
    a = await seat_for()
    await matching.queue_join(a)
    again = await matching.queue_join(a)
    assert [type(f) for f in again.frames] == [QueueWaiting] and a.waiting


async def test_chat_and_signals_reach_the_partner_only_for_the_current_match():
    a, b = await paired()
    assert b.match is not None
    match_id = b.match.match_id
    mine = await matching.chat_send(b, Chat(type="chat", match_id=match_id, text="hi"))
    assert [(type(f), f.sender) for f in mine.frames] == [(ChatOut, "me")]  # type: ignore[attr-defined]
    line = events.Chat.model_validate(await received(a))
    theirs = (await matching.partner_chat(a, line)).frames
    assert [(type(f), f.text, f.sender) for f in theirs] == [(ChatOut, "hi", "partner")]  # type: ignore[attr-defined]

    await matching.signal_relay(
        b, Signal(type="signal", match_id=match_id, kind="offer", data=OFFER)
    )
    signal = events.Signal.model_validate(await received(a))
    assert [type(f) for f in matching.partner_signal(a, signal).frames] == [SignalOut]

    with pytest.raises(ServiceError) as exc:
        await matching.signal_relay(
            b, Signal(type="signal", match_id="nope", kind="offer", data=OFFER)
        )
    assert exc.value.code == "not_in_match"
    # An event about another match (or from someone else) is dropped, not shown.
    stale = events.Chat(match_id="old", from_id=b.user_id, text="x", lang="")
    assert (await matching.partner_chat(a, stale)).frames == []


async def test_next_tells_the_partner_who_goes_back_to_the_queue():
    a, b = await paired()
    assert a.match is not None
    match_id = a.match.match_id
    out = await matching.next_partner(b)
    assert [type(f) for f in out.frames] == [QueueWaiting] and b.waiting and b.match is None
    ended = events.Ended.model_validate(await received(a))
    assert (ended.match_id, ended.reason) == (match_id, "next")
    back = (await matching.partner_ended(a, ended)).frames
    # A skip: the two are not paired again, so a waits too.
    assert [type(f) for f in back] == [MatchEnded, QueueWaiting] and a.waiting
    assert await mm.partner_of(a.user_id) is None


async def test_a_next_for_a_match_already_over_leaves_the_new_one_alone():
    """b presses Next on its match with a while a leaves it: the server has already put b
    back in line and matched it with c, which b has not seen yet. That Next was about a, so
    it must not end the match with c (the user saw two matches at once)."""
    a, b = await paired()
    assert b.match is not None
    old = b.match.match_id
    c = await seat_for(gender="f")
    assert [type(f) for f in (await matching.queue_join(c)).frames] == [QueueWaiting]
    await matching.queue_leave(a)
    ended = events.Ended.model_validate(await received(b))
    back = (await matching.partner_ended(b, ended)).frames
    assert [type(f) for f in back] == [MatchEnded, MatchFound]
    assert b.match is not None and b.match.partner_id == c.user_id
    with pytest.raises(ServiceError) as exc:
        await matching.next_partner(b, match_id=old)
    assert exc.value.code == "not_in_match"
    current = await mm.partner_of(b.user_id)
    assert current is not None and current[1] == c.user_id
    # A Next that names the current match ends it, as before.
    out = await matching.next_partner(b, match_id=b.match.match_id)
    assert [type(f) for f in out.frames] == [QueueWaiting]


async def test_queue_leave_ends_the_match_and_the_partner_is_told():
    a, b = await paired()
    assert [type(f) for f in (await matching.queue_leave(a)).frames] == [QueueLeft]
    ended = events.Ended.model_validate(await received(b))
    assert ended.reason == "left" and ended.from_id == a.user_id


async def test_a_matched_event_for_a_pairing_already_over_is_ignored():
    a = await seat_for()
    stale = events.Matched(match_id="gone", from_id=1, from_channel="x", card={})
    assert (await matching.partner_matched(a, stale)).frames == [] and a.match is None


async def test_a_matched_event_for_a_pair_this_seat_ended_meanwhile_is_ignored():
    """a waits; b pairs with it; before a hears of it, a presses Next (its step ends that
    pair, a skip, and queues a again): the "matched" that comes after is stale."""
    a, b = await seat_for(gender="f"), await seat_for(gender="m")
    await matching.queue_join(a)
    await matching.queue_join(b)
    matched = events.Matched.model_validate(await received(a))
    out = await matching.next_partner(a)
    assert [type(f) for f in out.frames] == [QueueWaiting]
    assert (await matching.partner_matched(a, matched)).frames == []
    assert a.match is None and a.waiting
    assert await mm.partner_of(a.user_id) is None
    ended = events.Ended.model_validate(await received(b))
    assert (ended.match_id, ended.reason) == (matched.match_id, "next")
    await matching.queue_leave(a)  # not left waiting for the next test


async def test_a_matched_event_overtaken_by_its_ended_is_ignored():
    """The partner's "ended" normally follows its "matched"; if it overtook it (a dropped
    subscription sends one through the layer's sorted set), the late "matched" is stale."""
    a, b = await seat_for(gender="f"), await seat_for(gender="m")
    await matching.queue_join(a)
    await matching.queue_join(b)
    matched = events.Matched.model_validate(await received(a))
    await matching.queue_leave(b)
    ended = events.Ended.model_validate(await received(a))
    assert (await matching.partner_ended(a, ended)).frames == []  # not a match a knows yet
    assert (await matching.partner_matched(a, matched)).frames == []
    assert a.match is None


async def test_a_matched_event_to_a_socket_that_gave_up_its_place_is_ignored():
    a, b = await seat_for(gender="f"), await seat_for(gender="m")
    await matching.queue_join(a)
    await matching.queue_join(b)
    matched = events.Matched.model_validate(await received(a))
    await matching.seat_replaced(a)  # a newer socket of a's user took over (and ended it)
    assert (await matching.partner_matched(a, matched)).frames == [] and a.match is None
    await matching.queue_leave(b)


async def test_a_newer_socket_replaces_the_older_one():
    user = await sync_to_async(UserFactory)()
    old = await seat_for(user)
    await matching.queue_join(old)
    new = await seat_for(user)
    assert events.Replaced.model_validate(await received(old))
    out = await matching.seat_replaced(old)
    assert out.close_code == matching.CLOSE_REPLACED and not old.claimed
    assert [(type(f), f.code) for f in out.frames] == [(ErrorFrame, "replaced")]  # type: ignore[attr-defined]
    # The old socket's close leaves the newer one's place alone.
    await matching.seat_close(old)
    assert [type(f) for f in (await matching.queue_join(new)).frames] == [QueueWaiting]


async def test_a_ban_reaches_the_open_socket_which_gives_up_its_match_and_closes():
    a, b = await paired()
    staff = await sync_to_async(UserFactory)(is_staff=True)
    banned_user = await sync_to_async(User.objects.get)(pk=b.user_id)
    with capture_events() as sent:
        await sync_to_async(services.ban_create)(
            user=banned_user, reason="rude", duration=dt.timedelta(days=1), created_by=staff
        )
    [(group, payload)] = sent
    assert group == videochat_user_group(b.user_id)
    assert events.Banned.model_validate(payload)
    out = await matching.ban_reached(b)
    assert out.close_code == closecodes.FORBIDDEN
    assert [(type(f), f.code) for f in out.frames] == [(ErrorFrame, "banned")]  # type: ignore[attr-defined]
    ended = events.Ended.model_validate(await received(a))
    assert ended.reason == "disconnected"
    # A new socket of the banned user is refused at the door.
    with pytest.raises(ServiceError) as exc:
        await seat_for(banned_user)
    assert exc.value.code == "banned"


async def test_a_seat_that_gave_up_its_place_cannot_queue_again():
    """After a ban (or a newer socket) took the seat's place away, a join that was already on
    its way must not put the user back in line."""
    seat = await seat_for()
    await matching.ban_reached(seat)
    with pytest.raises(ServiceError) as exc:
        await matching.queue_join(seat)
    assert exc.value.code == "closed"
    with pytest.raises(ServiceError):
        await matching.next_partner(seat)
    assert not seat.waiting and await mm.partner_of(seat.user_id) is None
    other = await seat_for()
    assert [type(f) for f in (await matching.queue_join(other)).frames] == [QueueWaiting]


async def test_report_names_the_partner_matchmaking_knows():
    reporter = await sync_to_async(UserFactory)()
    with pytest.raises(ServiceError) as exc:
        await matching.report_partner(reporter=reporter, reason="spam", chat_lines=[], frame=None)
    assert exc.value.code == "no_partner" and exc.value.status == 409
    a, b = await paired()
    reporter = await sync_to_async(User.objects.get)(pk=a.user_id)
    report = await matching.report_partner(
        reporter=reporter,
        reason="spam",
        chat_lines=[{"from": "partner", "text": "buy"}],
        frame=None,
    )
    assert await sync_to_async(Report.objects.filter(pk=report.pk, reported_id=b.user_id).exists)()


async def test_filters_are_refused_without_the_entitlement():
    user = await sync_to_async(UserFactory)()
    seat = await matching.seat_open(
        user=user, channel_name=await get_channel_layer().new_channel(), client_ip=None
    )
    with pytest.raises(ServiceError) as exc:
        await matching.hello(seat, Hello(type="hello", want_gender="f"))
    assert exc.value.code == "filters_not_allowed"


async def test_queue_entries_read_the_paid_filters_only_when_they_may_have_changed(queries):
    """The entitlement is read at hello; a queue entry reads it again only once the paid time
    may be over, payments announced a change, or VIDEOCHAT_FILTERS_RECHECK_SECONDS passed
    (a staff edit in the admin announces nothing). It was one query per entry:
    benchmarks/matchmaking.py's end-to-end mode spent about a fifth of a server's samples
    there."""
    from payments.models import Entitlement
    from tests.factories import grant_premium

    user = await sync_to_async(UserFactory)()
    ent = await sync_to_async(grant_premium)(
        user, valid_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    )
    seat = await seat_for(user, gender="m", want_gender="f")
    queries.clear()
    for _ in range(3):
        assert [type(f) for f in (await matching.queue_join(seat)).frames] == [QueueWaiting]
        await matching.queue_leave(seat)
    assert queries == []

    # A refund: payments revokes and announces; the next entry reads and drops the filters.
    await sync_to_async(Entitlement.objects.filter(pk=ent.pk).update)(
        revoked_at=dt.datetime.now(dt.UTC)
    )
    matching.entitlements_changed(seat)
    queries.clear()
    out = await matching.queue_join(seat)
    assert [type(f) for f in out.frames] == [ErrorFrame, QueueWaiting]
    assert out.frames[0].code == "filters_not_allowed"  # type: ignore[attr-defined]
    assert len(queries) == 1
    assert seat.session is not None and seat.session.want_gender is None


async def test_filters_end_with_the_paid_time_without_an_announcement(
    queries, settings, monkeypatch
):
    from payments.models import Entitlement
    from tests.factories import grant_premium

    user = await sync_to_async(UserFactory)()
    # Paid for an hour more: the beat that expires it will not have run when the hour is up.
    hour = dt.timedelta(hours=1)
    ent = await sync_to_async(grant_premium)(user, valid_until=dt.datetime.now(dt.UTC) + hour)
    seat = await seat_for(user, want_country="DE")
    assert seat.filters_allowed
    # The hour passes, for both clocks the check reads: the process's (the seat's knowledge
    # runs out) and the database's (the paid time has ended: here, by moving its end back).
    later = hour.total_seconds() + 1
    real_clock = matching.wall_clock
    monkeypatch.setattr(matching, "wall_clock", lambda: real_clock() + later)
    await sync_to_async(Entitlement.objects.filter(pk=ent.pk).update)(
        valid_until=ent.valid_until - dt.timedelta(seconds=later)
    )
    out = await matching.queue_join(seat)
    assert [type(f) for f in out.frames] == [ErrorFrame, QueueWaiting]
    assert seat.session is not None and seat.session.want_country is None


async def test_after_the_recheck_interval_an_entry_does_not_wait_for_the_read(
    queries, settings, monkeypatch
):
    """Once VIDEOCHAT_FILTERS_RECHECK_SECONDS passed (no end to the paid time, but staff may
    have edited it in the admin, which announces nothing), the entitlement is read again
    beside the queue entry, not on its way: the entry goes on with what is known and the next
    one uses the answer. A read on the way made a filtering user's arrival wait its turn on
    the database once a minute (benchmarks/matchmaking.py: seconds at 1,000 arrivals/s
    once the sockets had been open a minute)."""
    import threading

    from payments.models import Entitlement
    from tests.factories import grant_premium
    from videochat import selectors

    settings.VIDEOCHAT_FILTERS_RECHECK_SECONDS = 0
    user = await sync_to_async(UserFactory)()
    ent = await sync_to_async(grant_premium)(user)
    seat = await seat_for(user, want_gender="m")
    release, done = threading.Event(), threading.Event()
    read = selectors.filters_allowed_until_many

    def held_read(**kwargs: Any) -> Any:
        release.wait(timeout=10)
        try:
            return read(**kwargs)
        finally:
            done.set()

    monkeypatch.setattr(selectors, "filters_allowed_until_many", held_read)
    out = await matching.queue_join(seat)
    assert [type(f) for f in out.frames] == [QueueWaiting]
    assert not done.is_set()  # answered while the read was still held
    refresh = seat.filters_refresh
    assert refresh is not None
    # Staff revoke it in the admin meanwhile: the read in flight sees it.
    await sync_to_async(Entitlement.objects.filter(pk=ent.pk).update)(
        revoked_at=dt.datetime.now(dt.UTC)
    )
    release.set()
    await refresh
    assert queries and seat.filters_refresh is None
    await matching.queue_leave(seat)
    out = await matching.queue_join(seat)
    assert [type(f) for f in out.frames] == [ErrorFrame, QueueWaiting]
    assert seat.session is not None and seat.session.want_gender is None


async def test_rechecks_due_together_are_one_query(queries, settings):
    """Sockets opened together (a deploy's reconnects) fall due for the re-read together:
    the entries' reads go to the database as one query, each seat getting its own answer."""
    from tests.factories import grant_premium

    settings.VIDEOCHAT_FILTERS_RECHECK_SECONDS = 0
    paid = [await sync_to_async(UserFactory)() for _ in range(4)]
    for user in paid[:3]:
        await sync_to_async(grant_premium)(user)
    seats = [await seat_for(user, want_gender="m") for user in paid[:3]]
    lapsed = await seat_for(paid[3])  # no filters asked at hello: allowed False
    queries.clear()
    await asyncio.gather(*(matching._filters_read(seat) for seat in [*seats, lapsed]))
    assert len(queries) == 1, queries
    assert [seat.filters_allowed for seat in seats] == [True, True, True]
    assert not lapsed.filters_allowed


async def test_an_announcement_during_a_read_is_not_lost(settings, monkeypatch):
    """A read that began before payments announced a change may predate it: read again."""
    import threading

    from payments.models import Entitlement
    from tests.factories import grant_premium
    from videochat import selectors

    user = await sync_to_async(UserFactory)()
    ent = await sync_to_async(grant_premium)(user)
    seat = await seat_for(user, want_gender="m")
    matching.entitlements_changed(seat)
    entered, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    read = selectors.filters_allowed_until_many
    calls = []

    def held_read(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            answer = read(**kwargs)  # still entitled
            loop.call_soon_threadsafe(entered.set)
            release.wait(timeout=10)
            return answer
        return read(**kwargs)

    monkeypatch.setattr(selectors, "filters_allowed_until_many", held_read)
    join = asyncio.create_task(matching.queue_join(seat))
    await entered.wait()
    # A refund, announced while the first read's answer is on its way.
    await sync_to_async(Entitlement.objects.filter(pk=ent.pk).update)(
        revoked_at=dt.datetime.now(dt.UTC)
    )
    matching.entitlements_changed(seat)
    release.set()
    out = await join
    assert [type(f) for f in out.frames] == [ErrorFrame, QueueWaiting]
    assert len(calls) == 2
