"""realtime.layers: channels_redis' delivery (order, groups, capacity) on the real Redis, with
an idle channel costing its consumer one future: no queue, no task of its own."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from redis.asyncio.connection import AbstractConnection

from realtime.layers import LeanRedisChannelLayer
from tests.conftest import aconnected
from tests.waiting import until

CONFIG = settings.CHANNEL_LAYERS["default"]["CONFIG"]


async def refused(sender: LeanRedisChannelLayer, name: str, message: dict[str, Any]) -> bool:
    """send_direct said no: the owner's process is not subscribed (any more)."""
    return not await sender.send_direct(name, message)


def layer_with(**config: object) -> LeanRedisChannelLayer:
    return LeanRedisChannelLayer(**{**CONFIG, **config})


def count_pipelines(client: Any) -> list[object]:
    """Each pipeline `client` makes from now on, appended to the list returned."""
    made: list[object] = []
    pipeline = client.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        made.append(pipeline(*args, **kwargs))
        return made[-1]

    client.pipeline = counted
    return made


async def test_the_configured_layer_is_the_lean_one() -> None:
    assert isinstance(get_channel_layer(), LeanRedisChannelLayer)


async def test_an_idle_channel_waits_on_a_future_without_a_queue() -> None:
    layer = layer_with()
    try:
        name = await layer.new_channel()
        waiting = layer.receive(name)
        assert isinstance(waiting, asyncio.Future) and not isinstance(waiting, asyncio.Task)
        assert not layer.receive_buffer  # channels_redis' per-channel queues: none made
        await layer.send(name, {"type": "x.one"})
        assert await waiting == {"type": "x.one"}
    finally:
        await layer.close_pools()


async def test_a_busy_channel_gets_what_came_meanwhile_in_order_and_groups_reach_all() -> None:
    layer = layer_with()
    try:
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("lean-test", a)
        await layer.group_add("lean-test", b)
        first = layer.receive(a)  # a waits; b is busy (not receiving)
        for i in range(3):
            await layer.group_send("lean-test", {"type": "x.n", "n": i})
        assert (await first)["n"] == 0
        assert [(await layer.receive(a))["n"] for _ in range(2)] == [1, 2]
        assert [(await layer.receive(b))["n"] for _ in range(3)] == [0, 1, 2]
        await layer.group_discard("lean-test", a)
        await layer.group_discard("lean-test", b)
    finally:
        await layer.close_pools()


async def test_a_channel_that_falls_behind_keeps_the_newest_capacity_messages() -> None:
    layer = layer_with(capacity=3)
    try:
        listening, behind = await layer.new_channel(), await layer.new_channel()
        waiting = layer.receive(listening)
        for i in range(5):
            await layer.send(behind, {"type": "x.n", "n": i})
        # One reader takes the process's messages in order: when this one is in, so are those.
        await layer.send(listening, {"type": "x.marker"})
        assert (await waiting)["type"] == "x.marker"
        assert [(await layer.receive(behind))["n"] for _ in range(3)] == [2, 3, 4]
    finally:
        await layer.close_pools()


async def test_a_closed_channel_is_no_longer_buffered_and_its_reader_stops() -> None:
    layer = layer_with()
    try:
        gone, kept = await layer.new_channel(), await layer.new_channel()
        waiting = layer.receive(kept)
        await layer.send(gone, {"type": "x.lost"})
        await layer.send(kept, {"type": "x.marker"})
        await waiting
        layer.close_channel(gone)
        await layer.send(gone, {"type": "x.late"})
        waiting = layer.receive(kept)
        await layer.send(kept, {"type": "x.marker"})
        await waiting
        assert gone not in layer._pending
        waiting = layer.receive(kept)
        waiting.cancel()  # the consumer of `kept` stops: nothing open, no reader left
        await asyncio.sleep(0)  # one turn: the future's done callbacks run
        assert not layer._open and not layer._readers
    finally:
        await layer.close_pools()


@pytest.mark.django_db(transaction=True)
async def test_a_consumer_that_ends_closes_its_channel(amake_user) -> None:  # type: ignore[no-untyped-def]
    layer = get_channel_layer()
    comm = await aconnected("/ws/presence/", await amake_user())
    assert any(layer._open.values())
    await comm.disconnect()
    assert not any(layer._open.values())


async def test_a_direct_message_reaches_a_subscribed_process_and_is_refused_otherwise() -> None:
    """send_direct: one PUBLISH to the owner's subscription while it has sockets; False (the
    caller then uses the sorted set) before it subscribed and after its last socket closed."""
    sender, owner = layer_with(), layer_with()
    try:
        name = await owner.new_channel()
        assert not await sender.send_direct(name, {"type": "x.early"})
        waiting = owner.receive(name)  # the owner's first receiver subscribes it
        await until(
            lambda: sender.send_direct(name, {"type": "x.direct", "n": 1}), what="subscribed"
        )
        assert await waiting == {"type": "x.direct", "n": 1}
        owner.close_channel(name)
        await until(lambda: refused(sender, name, {"type": "x.late"}), what="unsubscribed")
        assert not owner._pending  # nothing kept for a channel that is gone
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_a_direct_group_send_publishes_to_subscribed_members_and_queues_for_others() -> None:
    """group_send_direct: members whose process is subscribed get one PUBLISH each (nothing
    goes into their sorted set); a member whose process is not gets it through the set."""
    sender, owner = layer_with(), layer_with()
    try:
        live = await owner.new_channel()
        await sender.group_add("direct-test", live)
        waiting = owner.receive(live)
        await until(lambda: sender.send_direct(live, {"type": "x.warm"}), what="subscribed")
        assert await waiting == {"type": "x.warm"}
        later = await owner.new_channel("other")  # opened after the process subscribed
        await sender.group_add("direct-test", later)
        queued: list[str] = []
        send = sender._send_to_sets

        async def counted(group: str, channels: list[str], message: dict[str, Any]) -> None:
            queued.extend(channels)
            await send(group, channels, message)

        sender._send_to_sets = counted  # type: ignore[method-assign]
        await sender.group_send_direct("direct-test", {"type": "x.nudge"})
        assert await owner.receive(live) == {"type": "x.nudge"}
        assert await owner.receive(later) == {"type": "x.nudge"}
        assert queued == [later]
        await sender.group_discard("direct-test", live)
        await sender.group_discard("direct-test", later)
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_direct_messages_sent_together_go_in_one_pipeline() -> None:
    """send_direct batches: what many sockets send at once is one PUBLISH pipeline on one
    connection, not a pooled connection per message in flight."""
    sender, owner = layer_with(), layer_with()
    try:
        names = [await owner.new_channel() for _ in range(20)]
        waiters = [owner.receive(n) for n in names]
        await until(lambda: sender.send_direct(names[0], {"type": "x.warm"}), what="subscribed")
        assert await waiters[0] == {"type": "x.warm"}
        waiters[0] = owner.receive(names[0])
        client = sender.connection(sender.consistent_hash(owner.non_local_name(names[0])))
        pipelines = count_pipelines(client)
        sent = await asyncio.gather(
            *(sender.send_direct(n, {"type": "x.n", "i": i}) for i, n in enumerate(names))
        )
        assert sent == [True] * 20
        assert [(await w)["i"] for w in waiters] == list(range(20))
        assert len(pipelines) == 1
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_direct_group_sends_asked_together_are_one_round_trip() -> None:
    """group_send_direct batches: many groups nudged at once (a group commit's devices) cost
    one script on the Redis server, which reads their members and PUBLISHes to each; no
    pipeline of member reads, then one of PUBLISHes."""
    sender, owner = layer_with(), layer_with()
    try:
        names = [await owner.new_channel() for _ in range(10)]
        groups = [f"members-test-{i}" for i in range(10)]
        for group, name in zip(groups, names, strict=True):
            await sender.group_add(group, name)
        waiters = [owner.receive(n) for n in names]
        await until(lambda: sender.send_direct(names[0], {"type": "x.warm"}), what="subscribed")
        assert await waiters[0] == {"type": "x.warm"}
        # The script loaded on the server (a fresh one answers the first call NOSCRIPT).
        await sender.group_send_direct(groups[0], {"type": "x.warm"})
        assert await owner.receive(names[0]) == {"type": "x.warm"}
        waiters[0] = owner.receive(names[0])
        assert len({sender.consistent_hash(g) for g in groups}) == 1  # one server: one client
        client = sender.connection(sender.consistent_hash(groups[0]))
        pipelines = count_pipelines(client)
        scripts: list[object] = []
        evalsha = client.evalsha

        async def counted(*args: object) -> object:
            scripts.append(args[0])
            return await evalsha(*args)

        client.evalsha = counted
        await asyncio.gather(
            *(sender.group_send_direct(g, {"type": "x.n", "i": i}) for i, g in enumerate(groups))
        )
        assert [(await w)["i"] for w in waiters] == list(range(10))
        assert (len(scripts), len(pipelines)) == (1, 0)
        for group, name in zip(groups, names, strict=True):
            await sender.group_discard(group, name)
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_direct_and_group_sends_asked_together_arrive_in_the_order_asked() -> None:
    """A direct message and a group's go through one batcher: a watcher sees them in the
    order they were asked (a user's online, then offline), even in one batch."""
    sender, owner = layer_with(), layer_with()
    try:
        name = await owner.new_channel()
        await sender.group_add("order-test", name)
        waiting = owner.receive(name)
        await until(lambda: sender.send_direct(name, {"type": "x.warm"}), what="subscribed")
        assert await waiting == {"type": "x.warm"}
        await sender.group_send_direct("order-test", {"type": "x.warm"})  # the script loaded
        assert await owner.receive(name) == {"type": "x.warm"}
        await asyncio.gather(
            sender.send_direct(name, {"type": "x.n", "i": 1}),
            sender.group_send_direct("order-test", {"type": "x.n", "i": 2}),
            sender.send_direct(name, {"type": "x.n", "i": 3}),
        )
        assert [(await owner.receive(name))["i"] for _ in range(3)] == [1, 2, 3]
        await sender.group_discard("order-test", name)
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_a_direct_group_send_is_one_message_for_each_process() -> None:
    """group_send_direct: a group's members on one process get one PUBLISH between them, read
    and decoded once by that process (a reconnect storm's member.joined announcements in
    channels of 50: one PUBLISH, read and decode a member cost more than channels_redis'
    group_send, which sends one message a process)."""
    sender, owner = layer_with(), layer_with()
    try:
        names = [await owner.new_channel() for _ in range(5)]
        for name in names:
            await sender.group_add("many-test", name)
        waiters = [owner.receive(n) for n in names]
        await until(lambda: sender.send_direct(names[0], {"type": "x.warm"}), what="subscribed")
        assert await waiters[0] == {"type": "x.warm"}
        waiters[0] = owner.receive(names[0])
        decoded: list[bytes] = []
        deserialize = owner.deserialize

        def counted(body: bytes) -> object:
            decoded.append(body)
            return deserialize(body)

        owner.deserialize = counted  # type: ignore[method-assign]
        await sender.group_send_direct("many-test", {"type": "x.nudge"})
        got = [await w for w in waiters]
        assert got == [{"type": "x.nudge"}] * 5
        assert len(decoded) == 1
        # Decoded once, but each consumer gets a dict of its own, as Redis would give it: one
        # handler changing its event must not change its neighbours'.
        assert len({id(message) for message in got}) == 5
        for name in names:
            await sender.group_discard("many-test", name)
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_a_direct_group_send_reaches_a_process_of_the_earlier_release() -> None:
    """A process that listens on its one-channel topic only (the release before, during a
    rolling deploy) still gets a group's direct send: one PUBLISH a member there."""
    sender, owner = layer_with(), layer_with()
    try:
        names = [await owner.new_channel() for _ in range(2)]
        for name in names:
            await sender.group_add("earlier-test", name)
        real = owner.non_local_name(names[0])
        pubsub = owner.connection(owner.consistent_hash(real)).pubsub(
            ignore_subscribe_messages=True
        )
        await pubsub.subscribe(owner.prefix + "direct:" + real)  # as the earlier release
        try:
            received: list[bytes] = []
            while len(received) < 2:
                await sender.group_send_direct("earlier-test", {"type": "x.n"})
                item = await pubsub.get_message(timeout=1)
                while item is not None:
                    received.append(item["data"])
                    item = await pubsub.get_message(timeout=0.2)
            assert sorted(d.partition(b"\n")[0] for d in received[:2]) == sorted(
                n.encode() for n in names
            )
        finally:
            await pubsub.aclose()
        for name in names:
            await sender.group_discard("earlier-test", name)
    finally:
        await sender.close_pools()
        await owner.close_pools()


async def test_the_members_a_direct_group_send_misses_cost_one_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members whose process does not listen (a crashed process's, still in the group until
    its expiry) get the message through their sorted set as channels_redis' group_send puts
    it there: one script a Redis server, not four round trips a member."""
    sender, owner = layer_with(), layer_with()
    try:
        live = await owner.new_channel()
        waiting = owner.receive(live)
        await until(lambda: sender.send_direct(live, {"type": "x.warm"}), what="subscribed")
        assert await waiting == {"type": "x.warm"}
        # Opened after the process subscribed: not subscribed, as a crashed process's.
        names = [await owner.new_channel("other") for _ in range(5)]
        for name in names:
            await sender.group_add("missed-test", name)
        await sender.group_send_direct("missed-test", {"type": "x.warm"})  # scripts loaded
        assert [await owner.receive(n) for n in names] == [{"type": "x.warm"}] * 5
        sent: list[list[bytes]] = []
        send = AbstractConnection.send_packed_command
        senders = sender.connection(0).connection_pool  # not the owner's reader's commands

        async def counted(self: Any, command: Any, check_health: bool = True) -> None:
            if self in senders._in_use_connections:
                chunks = [command] if isinstance(command, bytes | str | memoryview) else command
                sent.append(
                    re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Z]+)\r\n", b"".join(map(bytes, chunks)))
                )
            await send(self, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        await sender.group_send_direct("missed-test", {"type": "x.n"})
        monkeypatch.undo()
        assert [await owner.receive(n) for n in names] == [{"type": "x.n"}] * 5
        assert sent == [[b"EVALSHA"], [b"EVAL"]], sent
        for name in names:
            await sender.group_discard("missed-test", name)
    finally:
        await sender.close_pools()
        await owner.close_pools()
