"""The sync sockets' database work: one socket waiting on the database does not hold up the
others of its process (each call runs on a pooled connection of its own, not in Channels'
single database thread), and what a fetch and an ack cost the database."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from messaging.models import RoomEvent
from messaging.services import delivered_sync, room_create, room_event_send
from realtime.events import capture_events
from realtime.keys import stream_group
from realtime.models import StreamItem
from realtime.stream import (
    stream_ack,
    stream_ack_many,
    stream_last_seq,
    stream_read,
    stream_render,
)
from tests.messaging.conftest import hello, member, settle, sync_socket, timeline
from tests.messaging.test_delivery import send_text, share_room_key

pytestmark = pytest.mark.django_db(transaction=True)


def hold_stream_rows(device_pk: int, locked: threading.Event, release: threading.Event) -> None:
    """Another transaction holds the device's stream rows: an ack of them waits."""
    try:
        with transaction.atomic():
            list(StreamItem.objects.select_for_update().filter(device_pk=device_pk))
            locked.set()
            release.wait(60)
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def stream_rows_held(device_pk: int) -> AsyncIterator[None]:
    """Inside, another transaction holds the device's stream rows (`hold_stream_rows`)."""
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_stream_rows, args=(device_pk, locked, release))
    holder.start()
    try:
        await sync_to_async(locked.wait, thread_sensitive=False)(30)
        yield
    finally:
        release.set()
        await sync_to_async(holder.join, thread_sensitive=False)(30)


async def receive_until(ws: Any, event_id: str, room_id: str) -> None:
    """Read `ws` until the timeline event `event_id` of `room_id` has come."""
    frames: list = []
    while event_id not in [e["event_id"] for e in timeline(frames, room_id)]:
        frames.append(await ws.receive_json_from(timeout=20))


async def test_a_socket_waiting_on_the_database_does_not_hold_up_another():
    alice, bob, carol = [await sync_to_async(member)() for _ in range(3)]
    await sync_to_async(room_create)(  # Bob has a stream to ack
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    with_carol = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[carol.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, with_carol.room_id, group, carol)
    bob_ws, carol_ws = await sync_socket(bob), await sync_socket(carol)
    bob_frames = await hello(bob_ws, 0)
    await hello(carol_ws, 0)

    async with stream_rows_held(bob.device.pk):
        # Bob's ack now waits on the lock, inside his socket's database call...
        await bob_ws.send_json_to({"type": "ack", "seq": bob_frames[-1]["seq"]})
        # ...while Carol's socket still gets a message pushed and answers a ping.
        event_id = await sync_to_async(send_text, thread_sensitive=False)(
            alice, with_carol.room_id, group, "not stuck", "t1"
        )
        await receive_until(carol_ws, event_id, with_carol.room_id)
    assert await settle(bob_ws) == []  # the ack went through once the lock was gone
    assert not await StreamItem.objects.filter(device_pk=bob.device.pk).aexists()
    for c in (bob_ws, carol_ws):
        await c.disconnect()


async def test_a_delivery_does_not_wait_behind_the_ack_before_it_on_the_same_socket():
    """An ack's trim is on its way while its socket goes on: a message pushed after the ack
    reaches the device though the trim waits on a lock; a ping answers once it is done."""
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, room.room_id, group, bob)
    bob_ws = await sync_socket(bob)
    bob_frames = await hello(bob_ws, 0)

    async with stream_rows_held(bob.device.pk):
        await bob_ws.send_json_to({"type": "ack", "seq": bob_frames[-1]["seq"]})
        event_id = await sync_to_async(send_text, thread_sensitive=False)(
            alice, room.room_id, group, "after the ack", "t1"
        )
        await receive_until(bob_ws, event_id, room.room_id)
        # The trim is still held up: what was acked is there.
        assert await StreamItem.objects.filter(
            device_pk=bob.device.pk, seq__lte=bob_frames[-1]["seq"]
        ).aexists()
    await settle(bob_ws)  # the pong comes after the trim
    assert not await StreamItem.objects.filter(
        device_pk=bob.device.pk, seq__lte=bob_frames[-1]["seq"]
    ).aexists()
    await bob_ws.disconnect()


def test_a_fetch_and_an_ack_cost_the_same_queries_whatever_the_group_size():
    def cost(n_members: int) -> tuple[int, int]:
        sender = member()
        others = [member() for _ in range(n_members - 1)]
        room = room_create(
            creator=sender.user, name="g", invite=[o.mxid for o in others], is_direct=False
        )
        receiver = others[0].device.pk
        last = stream_last_seq(device_pk=receiver)
        stream_ack(device_pk=receiver, seq=last)
        content = sender.olm.megolm_encrypt(sender.olm.megolm_session(), room.room_id, "x")
        room_event_send(
            device=sender.device,
            room_id=room.room_id,
            event_type="m.room.encrypted",
            txn_id="q",
            content=content,
        )
        with CaptureQueriesContext(connection) as fetch:
            items = stream_read(device_pk=receiver, after_seq=last, limit=100)
            assert len(stream_render(device_pk=receiver, items=items)) == 1
        # The last receiver's ack: the event is delivered and the sender gets the tick.
        for other in others[1:]:
            stream_ack(device_pk=other.device.pk, seq=stream_last_seq(device_pk=other.device.pk))
        with CaptureQueriesContext(connection) as ack:
            assert stream_ack(device_pk=receiver, seq=last + 1, limit=last + 1) == 1
        assert RoomEvent.objects.get(type="m.room.encrypted", room=room).delivered_at
        return len(fetch.captured_queries), len(ack.captured_queries)

    small, large = cost(2), cost(6)
    assert small == large
    fetch, ack = small
    # The items, the device's key counts, their events.
    assert fetch <= 3, fetch
    # BEGIN, the delete (returning the refs), the events locked with their senders' keyed
    # devices, those no device still waits for emptied, the tick with its stream head (on
    # PostgreSQL one statement with the emptying), COMMIT.
    assert ack <= (5 if connection.vendor == "postgresql" else 6), ack


def test_acks_batched_together_cost_what_one_ack_does():
    """A process's sockets' acks that wait together go in one transaction: three receivers'
    acks of three senders' messages take the statements of one (and each sender its tick)."""

    def sent_to_fresh_pair() -> tuple[int, int, int]:
        sender, receiver = member(), member()
        room = room_create(creator=sender.user, name="", invite=[receiver.mxid], is_direct=True)
        for device in (sender.device.pk, receiver.device.pk):
            stream_ack(device_pk=device, seq=stream_last_seq(device_pk=device))
        send_text(sender, room.room_id, sender.olm.megolm_session(), "x", "t1")
        return sender.device.pk, receiver.device.pk, stream_last_seq(device_pk=sender.device.pk)

    texts: list[list[str]] = []

    def ack_cost(pairs: list[tuple[int, int, int]]) -> int:
        acks = [(r, stream_last_seq(device_pk=r)) for _, r, _ in pairs]
        with CaptureQueriesContext(connection) as ctx:
            assert stream_ack_many(acks=acks) == len(pairs)
        texts.append([q["sql"] for q in ctx.captured_queries])
        return len(ctx.captured_queries)

    one = ack_cost([sent_to_fresh_pair()])
    pairs = [sent_to_fresh_pair() for _ in range(3)]
    # On PostgreSQL one statement in autocommit: the deletes, the events emptied, the ticks
    # (each event's only delivery: nobody else's ack can be under way).
    assert ack_cost(pairs) == one <= (1 if connection.vendor == "postgresql" else 6)
    if connection.vendor == "postgresql":
        # The same text for one ack and three, prepared once on the connection (its
        # planning cost PostgreSQL more than its run).
        assert texts[0] == texts[1]
        with connection.cursor() as cur:
            cur.execute("SELECT statement FROM pg_prepared_statements")
            prepared = {s for (s,) in cur.fetchall()}
        statements = [t for t in texts[1] if t not in ("BEGIN", "COMMIT")]
        assert len(statements) == 1
        assert _numbered(set(statements)) <= _numbered(prepared)
    assert RoomEvent.objects.filter(type="m.room.encrypted", delivered_at__isnull=True).count() == 0
    for sender, _, before in pairs:  # each sender's "delivered" tick, after its own stream
        [tick] = stream_render(
            device_pk=sender, items=stream_read(device_pk=sender, after_seq=before, limit=10)
        )
        assert tick["sync"]["rooms"]["join"], tick


def test_a_tick_per_sender_and_room_once_every_device_acked_nudged_as_read():
    """The "delivered" ticks an ack appends (on PostgreSQL built by the statement that
    empties the events): one per sender and room, the events in the order sent, none for an
    event another device still waits for; each nudge carries what a read renders."""
    alice, bob, carol = member(), member(), member()
    group = room_create(
        creator=alice.user, name="g", invite=[bob.mxid, carol.mxid], is_direct=False
    )
    direct = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    for m in (alice, bob, carol):
        stream_ack(device_pk=m.device.pk, seq=stream_last_seq(device_pk=m.device.pk))
    session = alice.olm.megolm_session()
    e1 = send_text(alice, group.room_id, session, "1", "t1")
    e2 = send_text(alice, group.room_id, session, "2", "t2")
    e3 = send_text(alice, direct.room_id, session, "3", "t3")
    start = stream_last_seq(device_pk=alice.device.pk)

    def ticks_since(seq: int, seen: list[Any]) -> list[dict[str, Any]]:
        items = stream_read(device_pk=alice.device.pk, after_seq=seq, limit=10)
        frames = stream_render(device_pk=alice.device.pk, items=items)
        nudged = [f for g, p in seen if g == stream_group(alice.device.pk) for f in p["frames"]]
        assert nudged == frames
        return [f["sync"] for f in frames]

    with capture_events() as seen:
        stream_ack_many(acks=[(bob.device.pk, stream_last_seq(device_pk=bob.device.pk))])
    assert ticks_since(start, seen) == [delivered_sync(direct.room_id, [e3])]  # carol waits
    middle = stream_last_seq(device_pk=alice.device.pk)
    with capture_events() as seen:
        stream_ack_many(acks=[(carol.device.pk, stream_last_seq(device_pk=carol.device.pk))])
    assert ticks_since(middle, seen) == [delivered_sync(group.room_id, [e1, e2])]
    assert not RoomEvent.objects.filter(type="m.room.encrypted", delivered_at=None).exists()


def _numbered(statements: set[str]) -> set[str]:
    """Prepared statements' text with their $1, $2... as "$" (Django logs "%s")."""
    import re

    return {re.sub(r"\$\d+", "$", s) for s in statements}


@pytest.mark.parametrize("other_commits", [True, False])
def test_two_devices_acking_one_event_at_once_empty_it_once_and_only_when_both_went(
    other_commits: bool,
):
    """Bob's ack of a group message while Carol's ack of it is under way (her transaction
    open, her delivery deleted in it): Bob's cannot settle the event alone. It waits for
    hers; if hers commits the event is emptied and ticked once, if hers rolls back the
    event still waits for Carol."""
    alice, bob, carol = member(), member(), member()
    group = room_create(
        creator=alice.user, name="g", invite=[bob.mxid, carol.mxid], is_direct=False
    )
    for m in (alice, bob, carol):
        stream_ack(device_pk=m.device.pk, seq=stream_last_seq(device_pk=m.device.pk))
    event_id = send_text(alice, group.room_id, alice.olm.megolm_session(), "1", "t1")
    ticks_from = stream_last_seq(device_pk=alice.device.pk)
    bob_ack, carol_ack = [
        (m.device.pk, stream_last_seq(device_pk=m.device.pk)) for m in (bob, carol)
    ]
    acked, release, bob_done = threading.Event(), threading.Event(), threading.Event()
    failures: list[BaseException] = []

    class RolledBack(Exception):
        pass

    def carol_acks() -> None:
        try:
            with transaction.atomic():
                stream_ack_many(acks=[carol_ack])
                acked.set()
                release.wait(60)
                if not other_commits:
                    raise RolledBack
        except RolledBack:
            pass
        except BaseException as exc:
            failures.append(exc)
        finally:
            acked.set()
            connection.close()

    def bob_acks() -> None:
        try:
            stream_ack_many(acks=[bob_ack])
        except BaseException as exc:
            failures.append(exc)
        finally:
            bob_done.set()
            connection.close()

    carol_thread = threading.Thread(target=carol_acks)
    carol_thread.start()
    assert acked.wait(30)
    bob_thread = threading.Thread(target=bob_acks)
    bob_thread.start()
    # Bob's ack cannot finish while Carol's transaction holds the event (it waits for her
    # outcome): it is still under way once the database shows it waiting on a lock.
    with connection.cursor() as cur:
        while not bob_done.is_set():
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            if cur.fetchone()[0]:
                break
    assert not bob_done.is_set()
    release.set()
    carol_thread.join(60)
    bob_thread.join(60)
    assert failures == []
    event = RoomEvent.objects.get(event_id=event_id)
    items = stream_read(device_pk=alice.device.pk, after_seq=ticks_from, limit=10)
    ticks = [f["sync"] for f in stream_render(device_pk=alice.device.pk, items=items)]
    assert not StreamItem.objects.filter(device_pk=bob.device.pk, ref=event.pk).exists()
    if other_commits:
        assert event.delivered_at is not None and event.content == {}
        assert ticks == [delivered_sync(group.room_id, [event_id])]
    else:
        assert event.delivered_at is None and event.content != {}
        assert StreamItem.objects.filter(device_pk=carol.device.pk, ref=event.pk).exists()
        assert ticks == []
