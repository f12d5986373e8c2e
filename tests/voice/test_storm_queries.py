"""A reconnect storm is every client's connect + channel.join at once (issue 16 item 6): each
costs a fixed number of database queries, whatever the channel's size, and the queries of
many sockets do not queue behind one database thread."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models.sql.compiler import SQLCompiler, SQLInsertCompiler, SQLUpdateCompiler
from redis.asyncio.connection import AbstractConnection

from realtime.dbpool import pooled
from realtime.fanout import RespConnection
from tests.conftest import acommunicator
from tests.voice.helpers import assert_alive, connect, expect, join, joined
from voice.keys import channel_group

# The session with its device + user + profile (accounts.selectors.session_identity).
CONNECT_QUERIES = 1
# After the handshake: the connection log row (its nickname from the profile the connect
# read), the admission (channel, ban and membership in one query), the membership's insert
# for a newcomer, and the member list (profiles, moderators and mutes in one query, bounded
# by MEMBER_LIST_LIMIT, not the channel's size). A reconnect storm's members skip the insert.
JOIN_QUERIES_NEWCOMER = 4
JOIN_QUERIES_MEMBER = 3


async def _connect_and_join(user, channel, queries):  # type: ignore[no-untyped-def]
    comm = await acommunicator("/ws/cbline/", user)  # the login: session and device
    queries.clear()
    ok, _ = await comm.connect(timeout=5)
    assert ok
    await join(comm, channel)  # the connect's own work (log row) is done before the reply
    return comm, list(queries)


async def test_connect_and_join_cost_fixed_queries(amake_user, make_channel, queries):
    owner = await amake_user()
    channel = await make_channel(owner)
    present = [await joined(await amake_user(), channel) for _ in range(2)]
    costs = []
    for extra in (0, 6):  # a bigger channel must not cost more
        for _ in range(extra):
            present.append(await joined(await amake_user(), channel))
        comm, seen = await _connect_and_join(await amake_user(), channel, queries)
        costs.append(seen)
        present.append(comm)
    for comm in present:
        await comm.disconnect()
    first, bigger = costs
    assert len(first) == len(bigger), (first, bigger)
    assert len(first) <= CONNECT_QUERIES + JOIN_QUERIES_NEWCOMER, first


async def test_a_member_reconnecting_costs_fewer(amake_user, make_channel, queries):
    owner = await amake_user()
    channel = await make_channel(owner)
    user = await amake_user()
    comm = await joined(user, channel)  # a member now
    await comm.disconnect()
    comm, seen = await _connect_and_join(user, channel, queries)
    await comm.disconnect()
    assert len(seen) <= CONNECT_QUERIES + JOIN_QUERIES_MEMBER, seen
    assert not any(q.startswith('INSERT INTO "voice_channelmembership"') for q in seen), seen


@pytest.fixture
def redis_commands(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The name of every Redis command sent by any async client (pipelined ones too)."""
    seen: list[bytes] = []
    pack = AbstractConnection.pack_command

    def counting(self, *args):  # type: ignore[no-untyped-def]
        seen.append(str(args[0]).encode() if not isinstance(args[0], bytes) else args[0])
        return pack(self, *args)

    monkeypatch.setattr(AbstractConnection, "pack_command", counting)
    return seen


async def test_a_join_sends_redis_the_same_commands_in_a_crowd(
    amake_user, make_channel, redis_commands
):
    """Adding the socket and reading who is live is one step in Redis: a storm's joins
    do not each send a command per member already there (O(members²) a channel)."""
    owner = await amake_user()
    channel = await make_channel(owner)
    present = [await joined(await amake_user(), channel) for _ in range(2)]
    costs = []
    for extra in (0, 6):
        for _ in range(extra):
            present.append(await joined(await amake_user(), channel))
        comm = await acommunicator("/ws/cbline/", await amake_user())
        ok, _ = await comm.connect(timeout=5)
        assert ok
        await assert_alive(comm)  # the connect's own work is done
        redis_commands.clear()
        await join(comm, channel)
        costs.append(sorted(redis_commands))
        present.append(comm)
    for comm in present:
        await comm.disconnect()
    assert costs[0] == costs[1], costs


async def test_pooled_database_calls_run_side_by_side(transactional_db):
    """Two sockets' database calls overlap: each waits here for the other to arrive, which
    one shared database thread could never let happen (the barrier would break)."""
    meet = threading.Barrier(2, timeout=5)

    def arrive() -> str:
        meet.wait()
        return threading.current_thread().name

    names = await asyncio.gather(pooled(arrive)(), pooled(arrive)())
    assert names[0] != names[1]


_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Z]+)\r\n")


@pytest.fixture
def redis_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """Each write of commands to Redis by any async client (a pipeline is one), redis-py's
    or realtime.fanout's, as the commands' names: one round trip each."""
    seen: list[list[bytes]] = []
    send = AbstractConnection.send_packed_command

    async def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        chunks = [command] if isinstance(command, bytes | str | memoryview) else list(command)
        seen.append(_COMMAND.findall(b"".join(bytes(c) for c in chunks)))
        return await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    call = RespConnection.call

    def lean(self, payload, replies):  # type: ignore[no-untyped-def]
        seen.append(_COMMAND.findall(payload))  # realtime.fanout's connections
        return call(self, payload, replies)

    monkeypatch.setattr(RespConnection, "call", lean)
    return seen


# The connect's admission, its groups (user, device, session and CBLINE's voice user), its
# presence and the read of who watches the user: one script (realtime.opening). It was four
# round trips (admission script, groups pipelined, presence transaction, the presence
# group's read); channels_redis alone sent ZADD and EXPIRE as two per group.
CONNECT_REDIS_ROUND_TRIPS = 1
PING_REDIS_ROUND_TRIPS = 2  # the rate limit's script, the presence heartbeat
# Not the connect's: the layer's reader, new pooled connections' handshakes, the process's
# liveness beat and sweep (realtime.liveness, each second).
_PLUMBING = {b"BZPOPMIN", b"SUBSCRIBE", b"HELLO", b"PING", b"CLIENT", b"SELECT", b"ZRANGEBYSCORE"}
_BEAT = [b"EXISTS", b"SET", b"ZADD", b"EXPIRE", b"SET", b"GET"]


async def test_a_connect_joins_its_groups_in_one_redis_round_trip(
    amake_user, redis_round_trips, settings
):
    # A first socket starts what a process does once (its pools' connections, its
    # liveness beat, the layer's reader).
    first = await acommunicator("/ws/cbline/", await amake_user())
    ok, _ = await first.connect(timeout=5)
    assert ok
    await assert_alive(first)
    comm = await acommunicator("/ws/cbline/", await amake_user())
    redis_round_trips.clear()
    ok, _ = await comm.connect(timeout=5)
    assert ok
    await assert_alive(comm)  # the connect's own work is done
    trips = [t for t in redis_round_trips if not _PLUMBING.intersection(t) and t != _BEAT]
    await comm.disconnect()
    await first.disconnect()
    assert [b"EVALSHA"] in trips, trips  # the connect's script (and the ping's rate limit)
    assert len(trips) <= CONNECT_REDIS_ROUND_TRIPS + PING_REDIS_ROUND_TRIPS, [t[:4] for t in trips]


async def test_joins_arriving_together_are_announced_together(
    amake_user, make_channel, monkeypatch
):
    """A crowd arriving in one channel: the members already there learn of every joiner, but
    the joins that came while an announcement was on its way go out as one group event (a
    storm's 5,000 joins in channels of 50 were 5,000 group sends, four round trips each)."""
    owner = await amake_user()
    channel = await make_channel(owner)
    present = [await joined(await amake_user(), channel) for _ in range(2)]
    newcomers = [await connect(await amake_user()) for _ in range(6)]
    layer = get_channel_layer()
    group_send, sent, release = layer.group_send_direct, [], asyncio.Event()

    async def held(group: str, message: dict) -> None:  # type: ignore[type-arg]
        if group == channel_group(channel.pk) and "joined" in message["type"]:
            sent.append(message)
            await release.wait()  # the first announcement is on its way until all have joined
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send_direct", held)
    await asyncio.gather(
        *(c.send_json_to({"type": "channel.join", "channel_id": channel.pk}) for c in newcomers)
    )
    for comm in newcomers:
        await expect(comm, "channel.joined")
    release.set()
    for comm in present:
        heard = {(await expect(comm, "member.joined"))["member"]["user_id"] for _ in newcomers}
        assert len(heard) == len(newcomers)
    for comm in present + newcomers:
        await comm.disconnect()
    assert len(sent) <= 2, [m["type"] for m in sent]


async def test_a_joins_announcement_and_a_leave_go_through_the_process_subscriptions(
    amake_user, make_channel, monkeypatch
):
    """member.joined and member.left reach the channel's members through their processes'
    subscriptions (one script sends, each process reads them off its subscription), not
    through channels_redis' group_send: a pipeline and a script to send, then a pop, a
    backup copy and its clean-up per member on the receiving side (a reconnect storm's
    announcements were 8 % of a server's time)."""
    owner = await amake_user()
    channel = await make_channel(owner)
    present = await joined(owner, channel)
    layer = get_channel_layer()
    through_sorted_sets: list[str] = []
    group_send = layer.group_send

    async def counted(group: str, message: dict) -> None:  # type: ignore[type-arg]
        through_sorted_sets.append(message["type"])
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counted)
    newcomer = await joined(await amake_user(), channel)
    await expect(present, "member.joined")
    await newcomer.disconnect()
    await expect(present, "member.left")
    await present.disconnect()
    assert through_sorted_sets == [], through_sorted_sets


async def test_admissions_asked_together_are_one_statement(amake_user, make_channel, queries):
    """The joins of a reconnect storm ask their admissions at once: those asked while one
    batch is on its way are read together, one statement and one database hop a batch (a
    hop each cost the event loop more than the read). Each still gets its own answer: the
    banned one its refusal, the unknown channel its not_found, a newcomer its membership."""
    from voice.services import channel_admit, channel_member_moderate

    owner = await amake_user()
    channel, other = await make_channel(owner), await make_channel(owner)
    users = [await amake_user() for _ in range(4)]
    banned = users[3]
    await database_sync_to_async(channel_member_moderate)(
        channel_id=channel.pk, moderator=owner, target_id=banned.pk, action="ban", minutes=5
    )
    asks = [(channel.pk, users[0]), (other.pk, users[1]), (channel.pk, users[2])]
    asks += [(channel.pk, banned), (channel.pk + other.pk + 1000, users[0])]
    queries.clear()
    found = await asyncio.gather(
        *(channel_admit(channel_id=c, user=u, password=None) for c, u in asks),
        return_exceptions=True,
    )
    admissions = [q for q in queries if "AS _member" in q]
    assert [a.channel.pk for a in found[:3]] == [channel.pk, other.pk, channel.pk]
    assert [getattr(e, "code", None) for e in found[3:]] == ["banned", "not_found"]
    assert len(admissions) == 1, admissions


async def test_member_lists_asked_together_are_one_statement(amake_user, make_channel, queries):
    """The joins of a reconnect storm each read their channel's member list at once: those
    asked while one batch is on its way are read together, one statement and one database
    hop a batch; each join gets its own channel's list, its mutes and moderators."""
    from voice import services

    owner, muted, other = await amake_user(), await amake_user(), await amake_user()
    channel, second = await make_channel(owner), await make_channel(other)
    await database_sync_to_async(services.channel_member_moderate)(
        channel_id=channel.pk, moderator=owner, target_id=muted.pk, action="mute", minutes=5
    )
    asks = [
        (channel, {owner.pk: "FR", muted.pk: ""}),
        (second, {other.pk: "", muted.pk: "DE"}),
        (channel, {}),
    ]
    queries.clear()
    lists = await asyncio.gather(
        *(services.members_describe(c, countries, first=0) for c, countries in asks)
    )
    described = [q for q in queries if "p.nickname" in q]
    assert len(described) == 1, described
    first, in_second, empty = ({m.user_id: m for m in found} for found in lists)
    assert (first[owner.pk].is_moderator, first[owner.pk].country) == (True, "FR")
    assert (first[muted.pk].muted, in_second[muted.pk].muted) == (True, False)
    assert (in_second[other.pk].is_moderator, in_second[muted.pk].country, empty) == (
        True,
        "DE",
        {},
    )


async def test_a_members_join_builds_no_queryset(amake_user, make_channel, monkeypatch):
    """A member's rejoin (a storm is mostly these) runs fixed statements: building and
    compiling querysets cost the servers more CPU than PostgreSQL spent running them."""
    owner = await amake_user()
    channel = await make_channel(owner)
    user = await amake_user()
    await (await joined(user, channel)).disconnect()  # a member now
    comm = await connect(user)
    await assert_alive(comm)  # the connect's own work is done
    compiled: list[str] = []
    as_sql = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        compiled.append(self.query.model.__name__ if self.query.model else "?")
        return as_sql(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    await join(comm, channel)
    monkeypatch.undo()
    await comm.disconnect()
    assert compiled == [], compiled


async def test_a_connect_builds_no_queryset(amake_user, monkeypatch):
    """A connect's session read (device, user, profile, session data) and its log row are
    fixed statements: compiling them per socket was the biggest cost of a reconnect storm's
    connect (benchmarks/reconnect_storm.py's profile: a third of a server's CPU)."""
    first = await connect(await amake_user())  # a process's once-only work done
    await assert_alive(first)
    comm = await acommunicator("/ws/cbline/", await amake_user())  # the login
    compiled: list[str] = []

    def counting(as_sql):  # type: ignore[no-untyped-def]
        def wrapped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            compiled.append(self.query.model.__name__ if self.query.model else "?")
            return as_sql(self, *args, **kwargs)

        return wrapped

    for compiler in (SQLCompiler, SQLInsertCompiler, SQLUpdateCompiler):
        monkeypatch.setattr(compiler, "as_sql", counting(compiler.as_sql))
    ok, _ = await comm.connect(timeout=5)
    assert ok
    await assert_alive(comm)  # the connect's own work (its log row) is done
    monkeypatch.undo()
    await comm.disconnect()
    await first.disconnect()
    assert compiled == [], compiled


async def test_a_connect_reads_the_online_setting_with_its_session(amake_user, monkeypatch):
    """Whether the user shows their online status comes with the session's read (the profile
    is there): the connect does not wait for Channels' one database thread for it."""
    import realtime.consumers

    hops: list[str] = []
    hop = realtime.consumers.database_sync_to_async

    def counting(func):  # type: ignore[no-untyped-def]
        hops.append(getattr(func, "__name__", repr(func)))
        return hop(func)

    monkeypatch.setattr(realtime.consumers, "database_sync_to_async", counting)
    comm = await connect(await amake_user())
    await assert_alive(comm)  # the connect's own work is done
    await comm.disconnect()
    assert hops == []


# A join's Redis round trips: the frame's rate-limit script, the user's sanctions version
# (read before the admission reads the sanctions), then one script: the channel's group,
# the socket's record and the live state the joiner is sent (voice.services.
# channel_socket_enter). Was 5: the group, the socket and the live state were one each.
JOIN_REDIS_ROUND_TRIPS = 3


async def test_a_join_reads_the_channels_live_state_in_one_round_trip(
    amake_user, make_channel, redis_round_trips
):
    """The joiner's group, its socket's record, its location flag, the talker, the recent
    transmissions and the channel's sanctions version are one script, not a round trip
    each (every join of a reconnect storm does them)."""
    owner = await amake_user()
    channel = await make_channel(owner)
    await (await joined(owner, channel)).disconnect()  # the process's once-only reads done
    comm = await connect(await amake_user())
    await assert_alive(comm)  # the connect's own work is done
    redis_round_trips.clear()
    await join(comm, channel)
    trips = [t for t in redis_round_trips if not _PLUMBING.intersection(t) and t != _BEAT]
    await comm.disconnect()
    assert len(trips) == JOIN_REDIS_ROUND_TRIPS, trips
    assert trips[1:] == [[b"GET"], [b"EVALSHA"]], trips


async def test_connects_arriving_together_write_their_log_rows_together(amake_user, monkeypatch):
    """The connection log rows of connects that come while a write is on its way go in one
    INSERT (a storm's 5,000 connects were 5,000 statements and database hops)."""
    from voice import services

    insert, batches, release = services._connection_log_insert, [], asyncio.Event()
    loop = asyncio.get_running_loop()

    def held(entries):  # type: ignore[no-untyped-def]
        batches.append(len(entries))
        if len(batches) == 1:  # the first write is on its way until all have connected
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return insert(entries)

    monkeypatch.setattr(services, "_connection_log_insert", held)
    comms = [await acommunicator("/ws/cbline/", await amake_user()) for _ in range(6)]
    for comm in comms:
        ok, _ = await comm.connect(timeout=5)
        assert ok
    release.set()
    for comm in comms:
        await assert_alive(comm)  # each connect's log row is written
    for comm in comms:
        await comm.disconnect()
    assert sum(batches) == 6 and len(batches) <= 2, batches


async def test_connects_arriving_together_read_their_sessions_together(amake_user, monkeypatch):
    """The session reads of connects that come while one read is on its way go in one
    statement and one database hop (a storm's 5,000 connects were 5,000 hops to the pool)."""
    from accounts import middleware

    identify, batches, release = middleware._identify, [], asyncio.Event()
    loop = asyncio.get_running_loop()

    def held(keys):  # type: ignore[no-untyped-def]
        batches.append(len(keys))
        if len(batches) == 1:  # the first read is on its way until all have asked
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return identify(keys)

    monkeypatch.setattr(middleware, "_identify", held)
    asked, everyone_asked = [], asyncio.Event()
    call = middleware._SessionReader.call

    def counted(self, key):  # type: ignore[no-untyped-def]
        asked.append(key)
        if len(asked) == len(comms):
            everyone_asked.set()
        return call(self, key)

    monkeypatch.setattr(middleware._SessionReader, "call", counted)
    comms = [await acommunicator("/ws/cbline/", await amake_user()) for _ in range(6)]
    connecting = [asyncio.ensure_future(comm.connect(timeout=5)) for comm in comms]
    await asyncio.wait_for(everyone_asked.wait(), 5)  # the first read is still held
    release.set()
    for ok, _ in await asyncio.gather(*connecting):
        assert ok
    for comm in comms:
        await assert_alive(comm)  # authenticated: an unknown session is closed at once
    for comm in comms:
        await comm.disconnect()
    assert sum(batches) == 6 and len(batches) <= 2, batches


async def test_a_join_is_rendered_once_for_all_the_members_it_is_announced_to(
    amake_user, make_channel, monkeypatch
):
    """The member.joined frame is rendered once by the joiner's process, not by each member's
    socket (a storm's channel of 50 rendered each joiner 49 times); the members receive
    exactly the frame rendering it themselves gives, and an announcement without the
    rendered frame (from a process of the previous release) is still rendered and sent."""
    from voice.schemas import MemberJoined

    owner = await amake_user()
    channel = await make_channel(owner)
    present = await joined(owner, channel)
    layer = get_channel_layer()
    group_send, sent = layer.group_send_direct, []

    async def seen(group: str, message: dict) -> None:  # type: ignore[type-arg]
        if "joined" in message["type"] and message["joined"][0]["member"]["user_id"] != owner.pk:
            sent.append(message)
            if len(sent) == 2:  # as a previous release's process sends it
                message = {**message, "joined": [{**j, "frame": ""} for j in message["joined"]]}
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send_direct", seen)
    newcomers = [await joined(await amake_user(), channel) for _ in range(2)]
    frames_heard = [await expect(present, "member.joined") for _ in newcomers]
    for comm in [present, *newcomers]:
        await comm.disconnect()
    assert [len(m["joined"]) for m in sent] == [1, 1]
    for message, heard in zip(sent, frames_heard, strict=True):
        joiner = message["joined"][0]
        assert json.loads(joiner["frame"]) == heard
        assert heard == json.loads(MemberJoined(member=joiner["member"]).model_dump_json())


async def test_a_join_whose_redis_step_fails_leaves_nothing_behind(amake_user, make_channel):
    """The relay is joined before the join's script (so the snapshot misses no floor news):
    when the script fails, the socket is taken off the relay again and told, not left
    hearing a channel it is not in."""
    from realtime.redis import get_async_redis
    from voice import keys
    from voice.relay import get_relay

    owner = await amake_user()
    channel = await make_channel(owner)
    comm = await connect(await amake_user())
    await assert_alive(comm)
    redis = get_async_redis()
    await redis.set(keys.sockets_key(channel.pk), "not a hash")  # the script's HGETALL fails
    try:
        await comm.send_json_to({"type": "channel.join", "channel_id": channel.pk})
        reply = await expect(comm, "error", timeout=5)
        assert reply["code"] == "server_error", reply
        assert get_relay().local_listener_count(channel.pk) == 0
    finally:
        await redis.delete(keys.sockets_key(channel.pk))
    await join(comm, channel)  # and the next join works
    assert get_relay().local_listener_count(channel.pk) == 1
    await comm.disconnect()


async def test_a_members_join_sends_nothing_through_redis_py(
    amake_user, make_channel, redis_commands
):
    """A storm's join reads the sanctions version on the relay's lean connection, as its
    other steps go: a redis-py command costs the server more than its round trip."""
    owner = await amake_user()
    channel = await make_channel(owner)
    comm = await acommunicator("/ws/cbline/", owner)
    ok, _ = await comm.connect(timeout=5)
    assert ok
    await assert_alive(comm)
    redis_commands.clear()
    await join(comm, channel)
    sent = list(redis_commands)
    await comm.disconnect()
    assert sent == [], sent
