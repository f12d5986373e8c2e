"""`send{room_id, txn_id, content}` on the sync socket: the same service as the HTTP PUT,
the same idempotency by txn_id, refusals as error frames that carry the txn_id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging.errors import ServiceError
from messaging.models import RoomEvent
from messaging.services import (
    SendRequest,
    ignored_users_set,
    room_create,
    room_event_send,
    room_events_send,
    room_leave,
)
from realtime.events import capture_events
from realtime.keys import stream_group
from realtime.models import IdempotencyKey, StreamItem
from realtime.stream import stream_last_seq, stream_read, stream_render
from tests.messaging.conftest import hello, member, settle, sync_socket, timeline
from tests.messaging.test_delivery import read_everything, share_room_key

pytestmark = pytest.mark.django_db(transaction=True)


async def _direct_chat() -> tuple[Any, Any, Any, Any, Any, Any, list[dict[str, Any]]]:
    """Alice and Bob in a direct room, Alice's Megolm session shared with Bob, both sockets
    said hello. Returns the people, the room, the session, both sockets and Bob's frames so
    far (the room key, over Olm)."""
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, room.room_id, group, bob)
    sender, receiver = await sync_socket(alice), await sync_socket(bob)
    await hello(sender, 0)
    frames = await hello(receiver, 0)
    return alice, bob, room, group, sender, receiver, frames


async def test_a_message_sent_over_the_socket_reaches_the_other_socket():
    alice, bob, room, group, sender, receiver, frames = await _direct_chat()
    content = alice.olm.megolm_encrypt(group, room.room_id, "over the socket")

    await sender.send_json_to(
        {"type": "send", "room_id": room.room_id, "txn_id": "s1", "content": content}
    )
    sent = await sender.receive_json_from()
    assert sent["type"] == "sent" and sent["txn_id"] == "s1"

    while sent["event_id"] not in [e["event_id"] for e in timeline(frames, room.room_id)]:
        frames.append(await receiver.receive_json_from())
    assert await sync_to_async(read_everything)(bob, frames, room.room_id) == ["over the socket"]
    assert timeline(frames, room.room_id)[-1]["event_id"] == sent["event_id"]
    for c in (sender, receiver):
        await c.disconnect()


async def test_a_resend_of_the_txn_id_answers_the_same_event_and_stores_nothing():
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    content = alice.olm.megolm_encrypt(group, room.room_id, "once")
    # First over HTTP's service (the socket dropped before the answer), then over a socket.
    first = await sync_to_async(room_event_send)(
        device=alice.device,
        room_id=room.room_id,
        event_type="m.room.encrypted",
        txn_id="t1",
        content=content,
    )
    comm = await sync_socket(alice)
    frame = {"type": "send", "room_id": room.room_id, "txn_id": "t1", "content": content}
    await comm.send_json_to(frame)
    again = await comm.receive_json_from()
    assert again == {"type": "sent", "txn_id": "t1", "event_id": first["event_id"]}
    stored = [e.pk async for e in RoomEvent.objects.filter(type="m.room.encrypted")]
    assert len(stored) == 1
    assert await StreamItem.objects.filter(device_pk=bob.device.pk, ref__in=stored).acount() == 1
    await comm.disconnect()


@pytest.mark.parametrize("case", ["not_a_member", "not_encrypted"])
async def test_a_refused_send_is_an_error_frame_carrying_the_txn_id(case):
    alice, bob, carol = [await sync_to_async(member)() for _ in range(3)]
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "session_id": "s"}
    who = alice
    if case == "not_a_member":
        who = carol
    else:
        content = {"body": "plain text"}
    comm = await sync_socket(who)
    await comm.send_json_to(
        {"type": "send", "room_id": room.room_id, "txn_id": "t-9", "content": content}
    )
    error = await comm.receive_json_from()
    assert error["type"] == "error" and error["ref"] == "t-9"
    assert error["code"] == ("M_NOT_FOUND" if case == "not_a_member" else "M_INVALID_PARAM")
    assert await settle(comm) == []  # the socket goes on
    assert not await RoomEvent.objects.filter(type="m.room.encrypted").aexists()
    await comm.disconnect()


def _request(m: Any, room_id: str, txn: str) -> SendRequest:
    content = m.olm.megolm_encrypt(m.olm.megolm_session(), room_id, txn)
    return SendRequest(device=m.device, room_id=room_id, txn_id=txn, content=content)


def test_sends_committed_together_cost_what_one_does_and_each_is_answered_as_alone():
    """A process's sockets' sends that wait together go in one transaction (group commit):
    the same statements for three sends as for one (every room in one read); a resend in
    the batch gets its stored answer, a refused send stores nothing (its txn_id can be sent
    again), and every stored event reaches its receiver's stream once."""

    def pair() -> tuple[Any, Any, str]:
        a, b = member(), member()
        room = room_create(creator=a.user, name="", invite=[b.mxid], is_direct=True)
        return a, b, room.room_id

    a, b, room_a = pair()
    with CaptureQueriesContext(connection) as one:
        [answer] = room_events_send(sends=[_request(a, room_a, "t1")])
    assert set(answer) == {"event_id"}
    pairs = [pair() for _ in range(3)]
    with CaptureQueriesContext(connection) as three:
        replies = room_events_send(sends=[_request(s, room, "t1") for s, _, room in pairs])
    # PostgreSQL: all of it in one statement (the rooms' read, the claims, the events, the
    # deliveries with their stream heads). Elsewhere: BEGIN, those as four, COMMIT.
    statements = 1 if connection.vendor == "postgresql" else 6
    assert len(one.captured_queries) == statements
    assert len(three.captured_queries) == statements

    stranger = member()
    blocked, blocker, room_blocked = pair()
    ignored_users_set(user=blocker.user, ignored=[blocked.mxid])
    before = stream_last_seq(device_pk=b.device.pk)
    before_blocker = stream_last_seq(device_pk=blocker.device.pk)
    mixed = room_events_send(
        sends=[
            _request(a, room_a, "t1"),  # a resend: the stored answer
            _request(stranger, room_a, "t9"),  # not a member: refused, stores nothing
            _request(blocked, room_blocked, "t1"),  # blocked in a direct room: refused too
            _request(a, room_a, "t2"),
        ]
    )
    assert mixed[0] == answer
    assert isinstance(mixed[1], ServiceError) and mixed[1].code == "M_NOT_FOUND"
    assert isinstance(mixed[2], ServiceError) and mixed[2].code == "M_FORBIDDEN"
    assert set(mixed[3]) == {"event_id"} and mixed[3] != answer
    assert stream_last_seq(device_pk=b.device.pk) == before + 1  # t2 only
    assert stream_last_seq(device_pk=blocker.device.pk) == before_blocker
    for refused in (stranger, blocked):
        assert not IdempotencyKey.objects.filter(device_pk=refused.device.pk).exists()
    for (_, receiver, _), reply in zip(pairs, replies, strict=True):
        event = RoomEvent.objects.get(event_id=reply["event_id"])
        assert StreamItem.objects.filter(device_pk=receiver.device.pk, ref=event.pk).count() == 1


def test_sends_of_one_batch_to_one_device_take_its_next_seqs_in_order_and_nudge_them():
    """Three sends of two members in one batch reach a third member's device as its next
    three seqs, in the order sent, and its nudges carry exactly the frames a read of its
    stream renders (the socket sends those unread)."""
    a, b, c = member(), member(), member()
    room = room_create(creator=a.user, name="g", invite=[b.mxid, c.mxid], is_direct=False)
    before = stream_last_seq(device_pk=b.device.pk)
    with capture_events() as seen:
        replies = room_events_send(
            sends=[
                _request(a, room.room_id, "x1"),
                _request(c, room.room_id, "y1"),
                _request(a, room.room_id, "x2"),
            ]
        )
    items = stream_read(device_pk=b.device.pk, after_seq=before, limit=10)
    assert [it.seq for it in items] == [before + 1, before + 2, before + 3]
    events = {e.pk: e.event_id for e in RoomEvent.objects.filter(pk__in=[i.ref for i in items])}
    assert [events[it.ref] for it in items] == [r["event_id"] for r in replies]
    nudged = [f for g, p in seen if g == stream_group(b.device.pk) for f in p["frames"]]
    assert nudged == stream_render(device_pk=b.device.pk, items=items)


def test_a_resend_after_the_sender_left_the_room_gets_its_stored_answer():
    """As alone (the key is claimed before the room is read): a send stored once answers
    its event id again, even when its sender is no longer a member; a new one is refused."""
    a, b = member(), member()
    room = room_create(creator=a.user, name="g", invite=[b.mxid], is_direct=False)
    sent = _request(a, room.room_id, "t1")
    [first] = room_events_send(sends=[sent])
    room_leave(user=a.user, room_id=room.room_id)
    again, new = room_events_send(sends=[sent, _request(a, room.room_id, "t2")])
    assert again == first
    assert isinstance(new, ServiceError) and new.code == "M_NOT_FOUND"
    assert RoomEvent.objects.filter(type="m.room.encrypted").count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement on PostgreSQL")
async def test_a_send_alone_on_the_socket_is_one_statement(queries):
    """An idle process's send goes alone, by the group commit's one statement too (not the
    HTTP PUT's transaction of several)."""
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    content = await sync_to_async(_request)(alice, room.room_id, "s1")
    comm = await sync_socket(alice)
    await hello(comm, 0)
    queries.clear()
    frame = {"type": "send", "room_id": room.room_id, "txn_id": "s1", "content": content.content}
    await comm.send_json_to(frame)
    sent = await comm.receive_json_from()
    assert sent["type"] == "sent" and sent["txn_id"] == "s1"
    assert len(queries) == 1, queries
    await comm.disconnect()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_the_send_statement_is_prepared_once_per_connection_whatever_the_batch_size():
    """The send's one statement is planned once per connection, not at every batch (its
    planning cost PostgreSQL 3-4x its run): one prepared statement serves batches of one and
    of three, and a connection replaced (a fault, the pool) prepares it again and sends."""

    def prepared() -> list[str]:
        with connection.cursor() as cur:
            cur.execute("SELECT statement FROM pg_prepared_statements")
            return [s for (s,) in cur.fetchall() if s.startswith("WITH s AS")]

    a, b = member(), member()
    room = room_create(creator=a.user, name="", invite=[b.mxid], is_direct=True).room_id
    room_events_send(sends=[_request(a, room, "p1")])
    with CaptureQueriesContext(connection) as ctx:
        room_events_send(sends=[_request(a, room, f"p{n}") for n in (2, 3, 4)])
    [logged] = ctx.captured_queries  # still counted and logged, with its text
    assert logged["sql"].startswith("WITH s AS")
    assert len(prepared()) == 1
    connection.close()
    assert prepared() == []
    [reply] = room_events_send(sends=[_request(a, room, "p5")])
    assert set(reply) == {"event_id"}
    assert len(prepared()) == 1
    assert StreamItem.objects.filter(device_pk=b.device.pk).count() >= 4


async def _tick_for_alice() -> tuple[Any, Any, Any, Any, Any, dict[str, Any]]:
    """Alice sends one message over her socket, Bob acks it: Alice's socket gets the
    "delivered" tick, a durable frame of her stream. Returns the people, the room, the
    Megolm session, Alice's socket and the tick frame."""
    alice, bob, room, group, sender, receiver, frames = await _direct_chat()
    content = alice.olm.megolm_encrypt(group, room.room_id, "first")
    await sender.send_json_to(
        {"type": "send", "room_id": room.room_id, "txn_id": "m1", "content": content}
    )
    sent = await sender.receive_json_from()
    while sent["event_id"] not in [e["event_id"] for e in timeline(frames, room.room_id)]:
        frames.append(await receiver.receive_json_from())
    await receiver.send_json_to({"type": "ack", "seq": frames[-1]["seq"]})
    tick = await sender.receive_json_from()
    assert tick["seq"] and "delivered" in json.dumps(tick), tick
    await receiver.disconnect()
    return alice, bob, room, group, sender, tick


async def _send_second(alice: Any, room: Any, group: Any, sender: Any, ack: int) -> None:
    content = alice.olm.megolm_encrypt(group, room.room_id, "second")
    frame = {"type": "send", "room_id": room.room_id, "txn_id": "m2", "content": content}
    await sender.send_json_to({**frame, "ack": ack})


async def _stream_seqs(device_pk: int) -> list[int]:
    items = StreamItem.objects.filter(device_pk=device_pk).values_list("seq", flat=True)
    return [seq async for seq in items]


async def test_a_send_carries_the_ack_of_what_its_socket_received_and_trims_it():
    # The sender's ack of its "delivered" tick rides on its next send: one frame, not two.
    alice, _bob, room, group, sender, tick = await _tick_for_alice()
    await _send_second(alice, room, group, sender, tick["seq"])
    sent = await sender.receive_json_from()
    assert sent["type"] == "sent" and sent["txn_id"] == "m2"
    await settle(sender)  # the pong comes once this socket's acks are applied
    assert tick["seq"] not in await _stream_seqs(alice.device.pk)
    await sender.disconnect()


async def test_a_send_whose_ack_is_ahead_is_still_stored_and_the_ack_refused_apart():
    alice, _bob, room, group, sender, tick = await _tick_for_alice()
    await _send_second(alice, room, group, sender, tick["seq"] + 50)
    refused = await sender.receive_json_from()
    assert refused["type"] == "error" and refused["code"] == "ack_ahead"
    assert refused.get("ref") is None  # not the send's txn_id: the send itself went through
    sent = await sender.receive_json_from()
    assert sent["type"] == "sent" and sent["txn_id"] == "m2"
    await settle(sender)
    assert tick["seq"] in await _stream_seqs(alice.device.pk)  # the refused ack trimmed nothing
    await sender.disconnect()
