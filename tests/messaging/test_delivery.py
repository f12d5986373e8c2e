"""Room events and to-device messages on the durable stream, with real Olm/Megolm payloads
made by vodozemac devices: backlog on reconnect, deletion on ack, ticks, redaction, blocks,
receipts, retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Profile
from messaging import selectors, tasks
from messaging.models import Membership, RoomEvent
from messaging.services import (
    ignored_users_set,
    keys_claim,
    receipt_send,
    room_create,
    room_event_redact,
    room_event_send,
    room_kick,
    to_device_send,
    undelivered_purge,
)
from realtime.errors import ServiceError
from realtime.models import IdempotencyKey, StreamItem
from tests.messaging.conftest import (
    Member,
    hello,
    member,
    settle,
    sync_socket,
    timeline,
    to_device,
)

pytestmark = pytest.mark.django_db(transaction=True)


def share_room_key(sender: Member, room_id: str, group: Any, *recipients: Member) -> None:
    """What the SDK's shareRoomKey does: claim a one-time key per device, send the Megolm
    session key to each over Olm (to-device)."""
    wanted = {r.mxid: {r.device.device_id: "signed_curve25519"} for r in recipients}
    claimed = keys_claim(user=sender.user, wanted=wanted)["one_time_keys"]
    messages: dict[str, dict[str, Any]] = {}
    for r in recipients:
        (otk,) = claimed[r.mxid][r.device.device_id].values()
        payload = sender.olm.room_key_payload(room_id, group)
        content = sender.olm.olm_encrypt(r.olm.curve25519, otk["key"], payload)
        messages.setdefault(r.mxid, {})[r.device.device_id] = content
    to_device_send(
        device=sender.device,
        event_type="m.room.encrypted",
        txn_id=f"k{id(group)}",
        messages=messages,
    )


def send_text(sender: Member, room_id: str, group: Any, text: str, txn: str) -> str:
    content = sender.olm.megolm_encrypt(group, room_id, text)
    return room_event_send(
        device=sender.device,
        room_id=room_id,
        event_type="m.room.encrypted",
        txn_id=txn,
        content=content,
    )["event_id"]


def read_everything(receiver: Member, frames: list[dict[str, Any]], room_id: str) -> list[str]:
    """Decrypt as the SDK would: Olm to-device first (room keys), then the timeline."""
    for event in to_device(frames):
        if event["type"] == "m.room.encrypted":
            receiver.olm.accept_room_key(receiver.olm.olm_decrypt(event["content"]))
    return [
        receiver.olm.megolm_decrypt(e["content"])["content"]["body"]
        for e in timeline(frames, room_id)
        if e["type"] == "m.room.encrypted"
    ]


async def test_an_offline_device_gets_its_backlog_and_the_delivery_is_deleted_after_ack():
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    alice2 = await sync_to_async(member)(alice.user)  # Alice's second device
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, room.room_id, group, bob, alice2)
    event_id = await sync_to_async(send_text)(alice, room.room_id, group, "hi bob", "t1")

    # Bob was offline all along; he connects now.
    comm = await sync_socket(bob)
    frames = await hello(comm, 0)
    assert await sync_to_async(read_everything)(bob, frames, room.room_id) == ["hi bob"]
    # The key counts come first, once (Alice's Olm session took one of Bob's five keys).
    assert frames[0]["seq"] is None
    assert frames[0]["sync"]["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert [e["event_id"] for e in timeline(frames, room.room_id)][-1] == event_id
    event = await RoomEvent.objects.aget(event_id=event_id)
    assert event.content["ciphertext"]  # still waiting for Alice's second device
    await comm.send_json_to({"type": "ack", "seq": frames[-1]["seq"]})
    await settle(comm)
    assert not await StreamItem.objects.filter(device_pk=bob.device.pk).aexists()

    # Alice's other device gets it too; once it acks, the ciphertext is gone.
    comm2 = await sync_socket(alice2)
    frames2 = await hello(comm2, 0)
    assert await sync_to_async(read_everything)(alice2, frames2, room.room_id) == ["hi bob"]
    await comm2.send_json_to({"type": "ack", "seq": frames2[-1]["seq"]})
    await settle(comm2)
    event = await RoomEvent.objects.aget(event_id=event_id)
    assert event.content == {} and event.delivered_at is not None

    # The sender's device sees the "delivered" tick.
    comm1 = await sync_socket(alice)
    ticks = [
        e
        for f in await hello(comm1, 0)
        for e in f["sync"]
        .get("rooms", {})
        .get("join", {})
        .get(room.room_id, {})
        .get("ephemeral", {})
        .get("events", [])
    ]
    assert ticks == [{"type": "org.callsapp.delivered", "content": {"event_ids": [event_id]}}]
    for c in (comm, comm1, comm2):
        await c.disconnect()


async def test_a_live_device_gets_the_message_pushed():
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    comm = await sync_socket(bob)
    await hello(comm, 0)
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, room.room_id, group, bob)
    await sync_to_async(send_text)(alice, room.room_id, group, "live", "t1")
    frames = []
    while not timeline(frames, room.room_id):
        frames.append(await comm.receive_json_from())
    assert await sync_to_async(read_everything)(bob, frames, room.room_id) == ["live"]
    await comm.disconnect()


def test_a_resend_with_the_same_txn_id_is_stored_once():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    group = alice.olm.megolm_session()
    content = alice.olm.megolm_encrypt(group, room.room_id, "once")
    first = room_event_send(
        device=alice.device,
        room_id=room.room_id,
        event_type="m.room.encrypted",
        txn_id="t9",
        content=content,
    )
    again = room_event_send(
        device=alice.device,
        room_id=room.room_id,
        event_type="m.room.encrypted",
        txn_id="t9",
        content=content,
    )
    assert first == again
    assert RoomEvent.objects.filter(type="m.room.encrypted").count() == 1
    assert (
        StreamItem.objects.filter(device_pk=bob.device.pk, kind="messaging.event").count() == 6
    )  # create, encryption, 2 joins, power levels, message


def test_delete_for_everyone_drops_the_pending_deliveries():
    alice, bob, carol = member(), member(), member()
    room = room_create(creator=alice.user, name="g", invite=[bob.mxid, carol.mxid], is_direct=False)
    group = alice.olm.megolm_session()
    event_id = send_text(alice, room.room_id, group, "oops", "t1")
    event = RoomEvent.objects.get(event_id=event_id)
    assert StreamItem.objects.filter(kind="messaging.event", ref=event.pk).count() == 2
    # Bob may not delete Alice's message; Alice may.
    with pytest.raises(ServiceError):
        room_event_redact(
            device=bob.device, room_id=room.room_id, event_id=event_id, txn_id="r", reason=None
        )
    room_event_redact(
        device=alice.device, room_id=room.room_id, event_id=event_id, txn_id="r", reason=None
    )
    assert not StreamItem.objects.filter(kind="messaging.event", ref=event.pk).exists()
    event.refresh_from_db()
    assert event.content == {}
    redaction = RoomEvent.objects.get(type="m.room.redaction")
    assert redaction.content == {"redacts": event_id}
    assert StreamItem.objects.filter(ref=redaction.pk).count() == 2  # Bob and Carol


def test_an_event_to_a_device_that_does_not_exist_is_refused_and_the_others_get_theirs():
    alice, bob = member(), member()
    room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    answer = to_device_send(
        device=alice.device,
        event_type="m.key.verification.request",
        txn_id="v1",
        messages={
            bob.mxid: {bob.device.device_id: {"n": 1}, "NOSUCHDEVICE": {"n": 2}},
            "@999999:localhost": {"X": {"n": 3}},
        },
    )
    assert answer == {
        "failures": {
            bob.mxid: {"NOSUCHDEVICE": "M_NOT_FOUND"},
            "@999999:localhost": {"X": "M_NOT_FOUND"},
        }
    }
    got = [
        e["content"]
        for it in StreamItem.objects.filter(device_pk=bob.device.pk, kind="messaging.sync")
        for e in it.body.get("to_device", {}).get("events", [])
    ]
    assert got == [{"n": 1}]


def test_a_user_who_blocked_the_sender_gets_nothing_and_others_lose_nothing():
    alice, bob, carol = member(), member(), member()
    direct = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    group_room = room_create(
        creator=alice.user, name="g", invite=[bob.mxid, carol.mxid], is_direct=False
    )
    ignored_users_set(user=bob.user, ignored=[alice.mxid])
    before = StreamItem.objects.filter(device_pk=bob.device.pk).count()
    carol_before = StreamItem.objects.filter(device_pk=carol.device.pk).count()
    group = alice.olm.megolm_session()

    with pytest.raises(ServiceError) as exc:
        send_text(alice, direct.room_id, group, "let me in", "t1")
    assert exc.value.code == "M_FORBIDDEN"
    assert not RoomEvent.objects.filter(type="m.room.encrypted").exists()

    send_text(alice, group_room.room_id, group, "to the group", "t2")
    assert StreamItem.objects.filter(device_pk=bob.device.pk).count() == before
    assert StreamItem.objects.filter(device_pk=carol.device.pk).count() == carol_before + 1

    answer = to_device_send(
        device=alice.device,
        event_type="m.dummy",
        txn_id="d",
        messages={bob.mxid: {"*": {}}, carol.mxid: {"*": {}}},
    )
    assert answer == {"failures": {bob.mxid: {"*": "M_FORBIDDEN"}}}
    # Invitations from Alice are refused too.
    with pytest.raises(ServiceError):
        room_create(creator=alice.user, name="again", invite=[bob.mxid], is_direct=False)


def test_an_oversize_ciphertext_is_refused_and_nothing_is_stored():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "A" * 70_000, "session_id": "s"}
    with pytest.raises(ServiceError) as exc:
        room_event_send(
            device=alice.device,
            room_id=room.room_id,
            event_type="m.room.encrypted",
            txn_id="big",
            content=content,
        )
    assert exc.value.code == "M_TOO_LARGE" and exc.value.status == 413
    assert not RoomEvent.objects.filter(type="m.room.encrypted").exists()
    assert not IdempotencyKey.objects.filter(key__contains="big").exists()
    with pytest.raises(ServiceError) as exc:
        room_event_send(
            device=alice.device,
            room_id=room.room_id,
            event_type="m.room.message",
            txn_id="plain",
            content={"body": "plaintext"},
        )
    assert exc.value.code == "M_INVALID_PARAM"


async def test_an_ack_of_another_devices_delivery_is_refused():
    alice, bob, eve = [await sync_to_async(member)() for _ in range(3)]
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    await sync_to_async(send_text)(alice, room.room_id, alice.olm.megolm_session(), "for bob", "t1")
    pending = await StreamItem.objects.filter(device_pk=bob.device.pk).acount()
    comm = await sync_socket(eve)
    assert len(await hello(comm, 0)) < pending  # Eve's own stream is shorter than Bob's
    await comm.send_json_to({"type": "ack", "seq": pending})
    assert (await comm.receive_json_from())["code"] == "ack_ahead"
    assert await StreamItem.objects.filter(device_pk=bob.device.pk).acount() == pending
    await comm.disconnect()


def test_a_removed_member_gets_no_next_message():
    alice, bob, carol = member(), member(), member()
    room = room_create(creator=alice.user, name="g", invite=[bob.mxid, carol.mxid], is_direct=False)
    room_kick(actor=alice.user, room_id=room.room_id, user_mxid=carol.mxid)
    assert not Membership.objects.filter(room=room, user=carol.user).exists()
    leave = (
        StreamItem.objects.filter(device_pk=carol.device.pk, kind="messaging.event")
        .order_by("-seq")
        .first()
    )
    assert leave is not None
    frame = selectors.render_stream_items(carol.device.pk, [leave])[0]
    (event,) = frame["sync"]["rooms"]["leave"][room.room_id]["timeline"]["events"]
    assert event["content"]["membership"] == "leave"
    before = StreamItem.objects.filter(device_pk=carol.device.pk).count()
    send_text(alice, room.room_id, alice.olm.megolm_session(), "after", "t1")
    assert StreamItem.objects.filter(device_pk=carol.device.pk).count() == before
    assert selectors.joined_members(room)["joined"].keys() == {alice.mxid, bob.mxid}
    # A non-admin may not remove anyone.
    with pytest.raises(ServiceError):
        room_kick(actor=bob.user, room_id=room.room_id, user_mxid=alice.mxid)


@pytest.mark.parametrize("allows", [True, False])
def test_read_receipts_reach_the_sender_only_if_the_reader_allows(allows):
    alice, bob = member(), member()
    Profile.objects.filter(user=bob.user).update(send_read_receipts=allows)
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    event_id = send_text(alice, room.room_id, alice.olm.megolm_session(), "seen?", "t1")
    receipt_send(device=bob.device, room_id=room.room_id, event_id=event_id)
    receipts = [
        e
        for it in StreamItem.objects.filter(device_pk=alice.device.pk, kind="messaging.sync")
        for e in it.body.get("rooms", {})
        .get("join", {})
        .get(room.room_id, {})
        .get("ephemeral", {})
        .get("events", [])
        if e["type"] == "m.receipt"
    ]
    assert len(receipts) == (1 if allows else 0)
    if allows:
        assert bob.mxid in receipts[0]["content"][event_id]["m.read"]


@override_settings(MESSAGING_RETENTION_DAYS=14)
def test_the_14_day_purge_deletes_undelivered_deliveries_with_time_moved_forward():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    event_id = send_text(alice, room.room_id, alice.olm.megolm_session(), "never read", "t1")
    assert selectors.undelivered(user=alice.user, room=room)[0]["event_id"] == event_id
    now = timezone.now()
    undelivered_purge(now=now + dt.timedelta(days=13, hours=23))
    assert StreamItem.objects.filter(device_pk=bob.device.pk).exists()
    counts = undelivered_purge(now=now + dt.timedelta(days=14, minutes=1))
    assert counts["items"] >= 1
    assert not StreamItem.objects.exists()
    assert not RoomEvent.objects.exists()
    assert selectors.undelivered(user=alice.user, room=room) == []


async def test_key_counts_come_after_hello_and_when_a_key_is_claimed():
    alice, bob = await sync_to_async(member)(otks=0), await sync_to_async(member)(otks=5)
    await sync_to_async(room_create)(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    comm = await sync_socket(bob)
    frames = await hello(comm, 0)
    assert frames[0] == {
        "type": "sync",
        "seq": None,
        "sync": {
            "device_one_time_keys_count": {"signed_curve25519": 5},
            "device_unused_fallback_key_types": ["signed_curve25519"],
        },
    }
    await sync_to_async(keys_claim)(
        user=alice.user, wanted={bob.mxid: {bob.device.device_id: "signed_curve25519"}}
    )
    live = await comm.receive_json_from()
    assert live["seq"] is None
    assert live["sync"]["device_one_time_keys_count"] == {"signed_curve25519": 4}
    await comm.disconnect()


def test_the_beat_task_purges_what_waited_past_the_retention():
    alice, bob = member(), member()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    send_text(alice, room.room_id, alice.olm.megolm_session(), "old", "t1")
    fresh_id = send_text(alice, room.room_id, alice.olm.megolm_session(), "new", "t2")
    # Everything but the fresh message was made 15 days ago (time moved forward for it).
    past = timezone.now() - dt.timedelta(days=15)
    fresh = RoomEvent.objects.get(event_id=fresh_id)
    StreamItem.objects.exclude(kind="messaging.event", ref=fresh.pk).update(created_at=past)
    RoomEvent.objects.exclude(pk=fresh.pk).update(created_at=past)
    tasks.undelivered_purge.delay()  # eager in tests: the task as beat runs it
    assert list(RoomEvent.objects.values_list("event_id", flat=True)) == [fresh_id]
    assert list(StreamItem.objects.values_list("ref", flat=True)) == [fresh.pk]


def test_sending_costs_the_same_queries_whatever_the_group_size():
    def cost(n_members: int) -> int:
        sender = member()
        others = [member() for _ in range(n_members - 1)]
        room = room_create(
            creator=sender.user, name="g", invite=[o.mxid for o in others], is_direct=False
        )
        content = sender.olm.megolm_encrypt(sender.olm.megolm_session(), room.room_id, "x")
        with CaptureQueriesContext(connection) as ctx:
            room_event_send(
                device=sender.device,
                room_id=room.room_id,
                event_type="m.room.encrypted",
                txn_id="q",
                content=content,
            )
        return len(ctx.captured_queries)

    small, large = cost(2), cost(6)
    assert small == large
    # BEGIN, the idempotency key's claim with its answer (the event id is made first), one
    # read (room, members' keyed devices, blocks), the event, the deliveries with their
    # stream heads (one statement), COMMIT.
    assert small == 6, small
