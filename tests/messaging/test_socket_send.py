"""`send{room_id, txn_id, content}` on the sync socket: the same service as the HTTP PUT,
the same idempotency by txn_id, refusals as error frames that carry the txn_id."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from messaging.models import RoomEvent
from messaging.services import room_create, room_event_send
from realtime.models import StreamItem
from tests.messaging.conftest import hello, member, settle, sync_socket, timeline
from tests.messaging.test_delivery import read_everything, share_room_key

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_message_sent_over_the_socket_reaches_the_other_socket():
    alice, bob = await sync_to_async(member)(), await sync_to_async(member)()
    room = await sync_to_async(room_create)(
        creator=alice.user, name="", invite=[bob.mxid], is_direct=True
    )
    group = alice.olm.megolm_session()
    await sync_to_async(share_room_key)(alice, room.room_id, group, bob)
    sender, receiver = await sync_socket(alice), await sync_socket(bob)
    await hello(sender, 0)
    frames = await hello(receiver, 0)  # the room key, over Olm
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
