"""The durable per-device stream: PostgreSQL rows, a real channel layer on Redis, and a
socket speaking hello/ack (docs/protocols/stream.md)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from pydantic import TypeAdapter

from realtime.consumers import BaseConsumer
from realtime.dbpool import pooled
from realtime.errors import ServiceError
from realtime.keys import stream_group
from realtime.models import IdempotencyKey, StreamItem
from realtime.schemas import Ack, Hello
from realtime.stream import NewItem, stream_ack, stream_append, stream_once
from realtime.stream_socket import StreamConsumerMixin
from tests.factories import DeviceFactory

pytestmark = pytest.mark.django_db(transaction=True)


CHANNELS: dict[int, str] = {}  # device pk -> channel name of its open test socket


class NoteStreamConsumer(StreamConsumerMixin, BaseConsumer):
    inbound = TypeAdapter(Hello | Ack)

    async def on_connect(self) -> None:
        CHANNELS[self.scope["device"].pk] = self.channel_name
        await self.stream_start(self.scope["device"].pk)


def with_identity(app: Any, user: Any, device: Any) -> Any:
    """The scope an authenticated socket has (user, device, session key), without the HTTP
    session."""
    identity = {"user": user, "device": device, "session_key": device.session_key}

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await app({**scope, **identity}, receive, send)

    return wrapped


async def open_stream(device: Any) -> WebsocketCommunicator:
    app = with_identity(NoteStreamConsumer.as_asgi(), device.user, device)
    comm = WebsocketCommunicator(app, "/ws/test-stream/")
    ok, _ = await comm.connect()
    assert ok
    # A pong proves on_connect finished (the stream group is joined).
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    return comm


def notes(device: Any, *texts: str) -> dict[int, list[int]]:
    return stream_append(
        items=[
            NewItem(user_id=device.user_id, device_pk=device.pk, kind="test.note", body={"t": t})
            for t in texts
        ]
    )


async def settle(comm: WebsocketCommunicator) -> None:
    """Every frame sent before returns has been handled (handlers run one at a time)."""
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}


async def hello(comm: WebsocketCommunicator, last_seq: int) -> list[dict[str, Any]]:
    """Say hello; return the frames up to and including caught_up."""
    await comm.send_json_to({"type": "hello", "last_seq": last_seq})
    frames = []
    while True:
        frame = await comm.receive_json_from()
        frames.append(frame)
        if frame["type"] == "caught_up":
            return frames


@pytest.fixture
def device() -> Any:
    return DeviceFactory()


async def test_a_client_that_missed_pushes_gets_them_on_hello(device):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    await sync_to_async(notes)(device, "one")
    assert await comm.receive_json_from() == {"type": "test.note", "t": "one", "seq": 1}
    await comm.send_json_to({"type": "ack", "seq": 1})
    # Not a ping: its pump runs after the pong, and could read the items appended below.
    await barrier(comm)

    # The live push is lost (as a full channel or a GC pause would lose it): nothing comes.
    await get_channel_layer().group_discard(stream_group(device.pk), CHANNELS[device.pk])
    await sync_to_async(notes)(device, "two", "three")
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()
    # ... and a socket that was closed meanwhile misses the next one.
    await sync_to_async(notes)(device, "four")

    again = await open_stream(device)
    frames = await hello(again, 1)
    assert [(f.get("t"), f["seq"]) for f in frames] == [
        ("two", 2),
        ("three", 3),
        ("four", 4),
        (None, 4),
    ]
    await again.disconnect()


async def test_ack_trims_and_unacked_items_come_again(device):
    await sync_to_async(notes)(device, "a", "b", "c")
    comm = await open_stream(device)
    assert [f["seq"] for f in await hello(comm, 0)] == [1, 2, 3, 3]
    await comm.send_json_to({"type": "ack", "seq": 2})
    await settle(comm)
    left = await sync_to_async(list)(
        StreamItem.objects.filter(device_pk=device.pk).values_list("seq", flat=True)
    )
    assert left == [3]
    await comm.disconnect()

    # Sent but never acked: it comes again, so the client dedupes (at-least-once).
    comm = await open_stream(device)
    assert [f["seq"] for f in await hello(comm, 2)] == [3, 3]
    await comm.disconnect()


async def test_an_ack_of_another_devices_stream_is_refused(device):
    other = await sync_to_async(DeviceFactory)()
    await sync_to_async(notes)(device, "x", "y", "z")
    comm = await open_stream(other)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    await comm.send_json_to({"type": "ack", "seq": 3, "ref": "r1"})
    err = await comm.receive_json_from()
    assert err["type"] == "error" and err["code"] == "ack_ahead" and err["ref"] == "r1"
    with pytest.raises(ServiceError) as exc:
        await sync_to_async(stream_ack)(device_pk=other.pk, seq=3)
    assert exc.value.code == "ack_ahead"
    # Nothing of the first device's stream was touched.
    assert await StreamItem.objects.filter(device_pk=device.pk).acount() == 3
    await comm.disconnect()


async def test_ack_before_hello_is_refused(device):
    await sync_to_async(notes)(device, "x")
    comm = await open_stream(device)
    await comm.send_json_to({"type": "ack", "seq": 1})
    assert (await comm.receive_json_from())["code"] == "hello_first"
    assert await StreamItem.objects.filter(device_pk=device.pk).acount() == 1
    await comm.disconnect()


@override_settings(STREAM_WINDOW=2)
async def test_no_more_than_the_window_is_in_flight(device):
    await sync_to_async(notes)(device, "1", "2", "3", "4", "5")
    comm = await open_stream(device)
    await comm.send_json_to({"type": "hello", "last_seq": 0})
    assert [(await comm.receive_json_from())["seq"] for _ in range(2)] == [1, 2]
    assert await comm.receive_nothing(0.2)
    await comm.send_json_to({"type": "ack", "seq": 2})
    assert [(await comm.receive_json_from())["seq"] for _ in range(2)] == [3, 4]
    await comm.send_json_to({"type": "ack", "seq": 4})
    assert (await comm.receive_json_from())["seq"] == 5
    assert (await comm.receive_json_from()) == {"type": "caught_up", "seq": 5}
    await comm.disconnect()


async def barrier(comm: WebsocketCommunicator) -> None:
    """Every frame sent before has been handled, and nothing runs after it: an ack beyond
    what was sent is refused before any database call (a ping would pump the stream)."""
    await comm.send_json_to({"type": "ack", "seq": 10**6, "ref": "barrier"})
    frame = await comm.receive_json_from()
    assert frame["ref"] == "barrier" and frame["code"] == "ack_ahead", frame


def stream_reads(queries: list[str]) -> list[str]:
    table = StreamItem._meta.db_table
    return [q for q in queries if q.startswith("SELECT") and table in q]


async def test_a_pushed_item_costs_one_read_and_its_ack_only_the_delete(device, queries):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    queries.clear()
    await sync_to_async(notes)(device, "one")
    assert await comm.receive_json_from() == {"type": "test.note", "t": "one", "seq": 1}
    await barrier(comm)
    # A short read is the end of the stream: no second read to find nothing.
    assert len(stream_reads(queries)) == 1, queries
    queries.clear()
    await comm.send_json_to({"type": "ack", "seq": 1})
    await barrier(comm)
    # The window had room: nothing waits to be sent, and what is appended next is nudged.
    # (On PostgreSQL with the CallsApp's ack statement, that delete is one of its CTEs.)
    assert len(queries) == 1 and "DELETE FROM" in queries[0], queries
    assert not await StreamItem.objects.filter(device_pk=device.pk).aexists()
    await comm.disconnect()


def rendered_notes(device: Any, *texts: str) -> dict[int, list[int]]:
    """Notes whose writer renders their frames (NewItem.frame): the nudge carries them."""
    return stream_append(
        items=[
            NewItem(
                user_id=device.user_id,
                device_pk=device.pk,
                kind="test.note",
                body={"t": t},
                frame={"type": "test.note", "t": t},
            )
            for t in texts
        ]
    )


async def test_a_rendered_item_reaches_a_socket_up_to_date_without_a_read(device, queries):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    queries.clear()
    await sync_to_async(rendered_notes)(device, "one", "two")
    assert await comm.receive_json_from() == {"type": "test.note", "t": "one", "seq": 1}
    assert await comm.receive_json_from() == {"type": "test.note", "t": "two", "seq": 2}
    await barrier(comm)
    assert stream_reads(queries) == [], queries
    # What a read gives back is the same frame: a reconnecting socket sees no difference.
    again = await open_stream(device)
    assert [f for f in await hello(again, 1) if f["type"] == "test.note"] == [
        {"type": "test.note", "t": "two", "seq": 2}
    ]
    await comm.disconnect()
    await again.disconnect()


async def test_a_socket_database_thread_is_not_held_while_its_nudge_is_sent(device, monkeypatch):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    layer = get_channel_layer()
    redis_slow = asyncio.Event()
    group_send = layer.group_send

    async def slow_group_send(group: str, message: dict[str, Any]) -> None:
        await redis_slow.wait()
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", slow_group_send)
    # The write commits and its thread is free again while the nudge still waits on Redis.
    await asyncio.wait_for(pooled(rendered_notes)(device, "one"), timeout=10)
    redis_slow.set()
    assert await comm.receive_json_from() == {"type": "test.note", "t": "one", "seq": 1}
    await comm.disconnect()


async def test_crossed_nudges_are_read_in_order_and_nothing_is_sent_twice(device):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    # The nudge of seq 1 is lost on its way (two writers' nudges can also arrive crossed):
    # seq 2's nudge finds a gap, so the socket reads, and seq 1's late nudge is ignored.
    await get_channel_layer().group_discard(stream_group(device.pk), CHANNELS[device.pk])
    await sync_to_async(rendered_notes)(device, "one")
    await get_channel_layer().group_add(stream_group(device.pk), CHANNELS[device.pk])
    await sync_to_async(rendered_notes)(device, "two")
    assert await comm.receive_json_from() == {"type": "test.note", "t": "one", "seq": 1}
    assert await comm.receive_json_from() == {"type": "test.note", "t": "two", "seq": 2}
    late = {"type": "stream.nudge", "frames": [{"type": "test.note", "t": "one", "seq": 1}]}
    await get_channel_layer().send(CHANNELS[device.pk], late)
    await barrier(comm)
    assert await comm.receive_nothing(0.1)
    await comm.disconnect()


async def test_rendered_items_beyond_the_window_wait_for_acks(device):
    with override_settings(STREAM_WINDOW=2):
        comm = await open_stream(device)
        assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
        await sync_to_async(rendered_notes)(device, "a", "b", "c")
        got = [await comm.receive_json_from() for _ in range(2)]
        assert [f["seq"] for f in got] == [1, 2]
        await barrier(comm)
        assert await comm.receive_nothing(0.1)
        await comm.send_json_to({"type": "ack", "seq": 2})
        assert await comm.receive_json_from() == {"type": "test.note", "t": "c", "seq": 3}
        await comm.disconnect()


def test_a_resend_with_the_same_idempotency_key_is_applied_once(device):
    applied = []

    def apply() -> dict[str, Any]:
        applied.append(1)
        seqs = notes(device, "sent once")
        return {"seq": seqs[device.pk][0]}

    first = stream_once(device_pk=device.pk, key="txn-1", apply=apply)
    again = stream_once(device_pk=device.pk, key="txn-1", apply=apply)
    assert first == again == {"seq": 1}
    assert len(applied) == 1
    assert StreamItem.objects.filter(device_pk=device.pk).count() == 1
    # Another device may use the same key for its own operation.
    other = DeviceFactory()
    stream_once(device_pk=other.pk, key="txn-1", apply=lambda: {"ok": True})
    assert IdempotencyKey.objects.count() == 2


def test_a_failed_operation_stores_no_key(device):
    def boom() -> dict[str, Any]:
        notes(device, "half done")
        raise ServiceError("invalid", "refused")

    with pytest.raises(ServiceError):
        stream_once(device_pk=device.pk, key="txn-2", apply=boom)
    assert not IdempotencyKey.objects.exists()
    assert not StreamItem.objects.exists()
    assert stream_once(device_pk=device.pk, key="txn-2", apply=lambda: {"ok": 1}) == {"ok": 1}


def run_in_threads(n: int, target: Any) -> list[Any]:
    """Run `target(i)` in n threads released together; each uses its own DB connection."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_resends_are_applied_once(device):
    applied = []

    def apply() -> dict[str, Any]:
        applied.append(1)
        return {"seq": notes(device, "once")[device.pk][0]}

    results = run_in_threads(6, lambda i: stream_once(device_pk=device.pk, key="k", apply=apply))
    assert len(applied) == 1
    assert all(r == {"seq": 1} for r in results)
    assert StreamItem.objects.filter(device_pk=device.pk).count() == 1


def test_concurrent_writers_get_gapless_increasing_seqs(device):
    second = DeviceFactory(user=device.user)

    def write(i: int) -> None:
        # Two devices per item, in opposite orders: no deadlock, no duplicate seq.
        for _ in range(10):
            pair = [device, second] if i % 2 else [second, device]
            stream_append(
                items=[NewItem(user_id=d.user_id, device_pk=d.pk, kind="test.note") for d in pair]
            )

    run_in_threads(4, write)
    for d in (device, second):
        seqs = list(StreamItem.objects.filter(device_pk=d.pk).values_list("seq", flat=True))
        assert sorted(seqs) == list(range(1, 41))


async def test_a_lost_nudge_costs_only_a_delay_until_the_next_ping(device):
    comm = await open_stream(device)
    assert await hello(comm, 0) == [{"type": "caught_up", "seq": 0}]
    await get_channel_layer().group_discard(stream_group(device.pk), CHANNELS[device.pk])
    await sync_to_async(notes)(device, "late")
    assert await comm.receive_nothing(0.3)
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    assert await comm.receive_json_from() == {"type": "test.note", "t": "late", "seq": 1}
    await comm.disconnect()


def test_an_append_of_several_devices_is_one_statement_in_item_order(device):
    """Heads and items in one statement: interleaved items of two devices get each device's
    next seqs in their order, bodies and refs as given."""
    second = DeviceFactory(user=device.user)
    notes(device, "before")
    items = [
        NewItem(user_id=d.user_id, device_pk=d.pk, kind="test.note", ref=ref, body={"t": t})
        for d, ref, t in [
            (device, 7, "a"),
            (second, None, "b"),
            (device, None, "c"),
            (second, 8, "d"),
            (device, 9, "é \" ' {}"),
        ]
    ]
    with CaptureQueriesContext(connection) as ctx:
        given = stream_append(items=items)
    statements = [q["sql"] for q in ctx.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(statements) == 1
    assert given == {device.pk: [2, 3, 4], second.pk: [1, 2]}
    rows = StreamItem.objects.order_by("device_pk", "seq").values_list(
        "device_pk", "seq", "ref", "body"
    )
    assert list(rows.filter(device_pk=device.pk)) == [
        (device.pk, 1, None, {"t": "before"}),
        (device.pk, 2, 7, {"t": "a"}),
        (device.pk, 3, None, {"t": "c"}),
        (device.pk, 4, 9, {"t": "é \" ' {}"}),
    ]
    assert list(rows.filter(device_pk=second.pk)) == [
        (second.pk, 1, None, {"t": "b"}),
        (second.pk, 2, 8, {"t": "d"}),
    ]
