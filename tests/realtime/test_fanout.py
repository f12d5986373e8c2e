"""realtime.fanout on the run's real Redis, used as a product other than CBLINE would use it:
a topic of our own naming, messages published by anyone, written to the right local sockets
(binary filtered by user, text chosen per socket), the RESP wire read however it is split,
and the subscription restored after Redis drops the connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime.fanout import Fanout, RespConnection, resp_command
from realtime.keys import key
from realtime.redis import get_async_redis
from tests.waiting import until


class Socket:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.channel_name = f"test.fanout.{user_id}"
        self.frames: list[bytes] = []
        self.texts: list[dict[str, Any]] = []

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.texts.append(json.loads(text_data))
        else:
            assert bytes_data is not None
            self.frames.append(bytes_data)


def topic_name(topic: object) -> str:
    return key("test", "fanout", topic)


class Board:
    """A toy product: text messages go to everyone but user 3, who gets a redacted one;
    binary messages only to even user ids."""

    def __init__(self) -> None:
        self.reconnects = 0
        self.fanout = Fanout(
            client_name=key("test-fanout") + f":{id(self):x}",
            pubsub_name=topic_name,
            on_message=self.on_message,
            on_reconnect=self.on_reconnect,
        )

    def on_message(self, topic: Any, data: bytes) -> None:
        if data.startswith(b"{"):
            text = data.decode()
            self.fanout.write_text(
                topic, lambda listener: '{"redacted":true}' if listener.user_id == 3 else text
            )
        else:
            self.fanout.write_binary(topic, data, lambda uid: uid is not None and uid % 2 == 0)

    def on_reconnect(self) -> None:
        self.reconnects += 1


@pytest.fixture
async def board() -> AsyncIterator[Board]:
    b = Board()
    yield b
    await b.fanout.close()


async def test_messages_reach_the_topics_local_sockets_as_the_product_says(board: Board) -> None:
    one, two, three, elsewhere = Socket(1), Socket(2), Socket(3), Socket(4)
    for s in (one, two, three):
        await board.fanout.join("a", s)
    await board.fanout.join("b", elsewhere)
    redis = get_async_redis()
    await redis.publish(topic_name("a"), b"\x01binary")
    await redis.publish(topic_name("a"), b'{"hello":1}')

    await until(lambda: len(one.texts) == 1 and len(three.texts) == 1 and len(two.texts) == 1)
    assert two.frames == [b"\x01binary"] and one.frames == [] and three.frames == []
    assert one.texts == [{"hello": 1}] and three.texts == [{"redacted": True}]
    assert elsewhere.frames == [] and elsewhere.texts == []
    assert board.fanout.stats.delivered == 1


async def test_the_last_leave_unsubscribes(board: Board) -> None:
    one, two = Socket(2), Socket(4)
    await board.fanout.join("c", one)
    await board.fanout.join("c", two)
    redis = get_async_redis()
    [(_, n)] = await redis.pubsub_numsub(topic_name("c"))
    assert int(n) == 1  # one subscription per process, not per socket
    await board.fanout.leave("c", one)
    await redis.publish(topic_name("c"), b"\x01x")
    await until(lambda: len(two.frames) == 1)
    assert one.frames == []
    await board.fanout.leave("c", two)

    async def unsubscribed() -> bool:
        [(_, n)] = await redis.pubsub_numsub(topic_name("c"))
        return int(n) == 0

    await until(unsubscribed, what="unsubscribed after the last leave")
    assert board.fanout.local_listener_count("c") == 0


async def test_a_dropped_subscriber_reconnects_and_tells_the_product(board: Board) -> None:
    listener = Socket(2)
    await board.fanout.join("d", listener)
    redis = get_async_redis()
    [conn] = [c for c in await redis.client_list() if c["name"] == board.fanout.client_name]
    assert await redis.client_kill_filter(_id=conn["id"]) == 1

    async def heard_again() -> bool:
        await redis.publish(topic_name("d"), b"\x01again")
        return bool(listener.frames)

    await until(heard_again, timeout=10, what="the fan-out resubscribed")
    assert board.reconnects >= 1


async def test_the_redis_wire_reads_replies_split_anywhere() -> None:
    """Binary audio may contain CR LF and arrive a byte at a time: pushes stay intact."""
    pushes: list[list[object]] = []
    conn = RespConnection(pushes.append)
    data = b"\x01\x00\r\n\r\n" + bytes(range(256))
    wire = resp_command(b"message", b"chan", data)
    for i in range(len(wire)):
        conn.data_received(wire[i : i + 1])
    assert pushes == [[b"message", b"chan", data]]


async def test_calls_of_one_turn_go_out_in_one_write_in_order(board: Board) -> None:
    """200 presses or packets at once cost one system call, not 200; replies still match
    their calls in order."""
    conn = await board.fanout.publisher()
    assert conn.transport is not None
    writes: list[bytes] = []
    real_write = conn.transport.write

    def counting(data: bytes) -> None:
        writes.append(data)
        real_write(data)

    conn.transport.write = counting  # type: ignore[method-assign]
    counter = key("test", "fanout", "turn")
    await get_async_redis().delete(counter)
    calls = [conn.call(resp_command(b"INCR", counter), 1) for _ in range(200)]
    assert writes == []  # nothing written before the turn ends
    assert [r for c in calls for r in await c] == list(range(1, 201))
    assert len(writes) == 1
    await get_async_redis().delete(counter)
