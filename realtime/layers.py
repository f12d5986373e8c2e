"""The channel layer: channels_redis, with a process-local receive that costs an idle socket
one future instead of a queue and two tasks.

channels_redis gives every consumer's channel an `asyncio.Queue` (about 3 KiB with its
deques and getter/putter machinery) and, while the consumer waits, two tasks racing for the
process's read lock and the queue (benchmarks/idle_memory.py: 6 KiB of a 41 KiB idle socket).
Here one reader per process channel pulls messages from Redis (the same `receive_single`,
backup queue and all) while any socket of the process is open, and hands each message to
its channel's waiting future; a channel whose consumer is busy keeps what arrives meanwhile
in a deque created only then, bounded by `capacity` (the oldest dropped, as channels_redis
does). `receive` of a process-local channel returns a plain future, so Channels'
dispatch loop waits on it without a task of its own.

What stays the same: sending, groups, capacity and expiry in Redis, the order of a channel's
messages, one receiver error per failed Redis read (that consumer closes for a reconnect; the
others keep waiting and the reader starts again).

Direct messages (`send_direct`, realtime.events.send_to): while any of its sockets is open, a
process also subscribes once to a pub/sub channel of its own, so a message to one socket
costs one PUBLISH, against the sorted set's send plus, on the receiving side, a pop, a backup
copy and its clean-up. A PUBLISH nobody received (the process is not subscribed yet, or its
subscription dropped) returns False and the caller sends through the sorted set instead. A
message to a socket of the sending process itself skips Redis (`deliver_local`). A direct
message on the wire is its channel's name, a newline, then the serialized message. A group's
direct send (`group_send_direct`) is one script on the Redis server: it reads the members and
PUBLISHes once to each of their processes (the names of its members there, space-separated,
then a newline and the message: read and decoded once for all of them, as channels_redis'
group_send does), and returns those no process received.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import hashlib
import logging
import time
import weakref
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.exceptions import NoScriptError

from .batching import Batcher
from .redis import async_blocking_pool

log = logging.getLogger(__name__)

Message = dict[str, Any]


# Direct messages in one script: ARGV[1] is the groups' expiry cutoff, ARGV[2] the topics'
# prefix, ARGV[3] the prefix of the topics that take one message for many channels, then a
# (kind, target, body) triple per message, in the order asked. Kind "p": a PUBLISH on the
# topic `target`, answered with its receiver count. Kind "g": `target` is a group's key (also
# in KEYS), and each process with members (names with "!") gets one PUBLISH on its topic
# for many, its members' names (space-separated), a newline, then the body; a process that
# does not listen there (of an earlier release) gets one PUBLISH a member on its topic, the
# body after its channel's name and a newline. Answered with the members nobody received it
# for, and those of no process, for the sorted set.
_DIRECT_LUA = """
local answers = {}
for j = 4, #ARGV, 3 do
  local kind, target, body = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  if kind == 'p' then
    answers[#answers + 1] = redis.call('PUBLISH', target, body)
  else
    redis.call('ZREMRANGEBYSCORE', target, 0, ARGV[1])
    local left, members, processes = {}, {}, {}
    for _, channel in ipairs(redis.call('ZRANGE', target, 0, -1)) do
      local bang = string.find(channel, '!', 1, true)
      if not bang then
        left[#left + 1] = channel
      else
        local process = string.sub(channel, 1, bang)
        if not members[process] then
          members[process] = {}
          processes[#processes + 1] = process
        end
        table.insert(members[process], channel)
      end
    end
    for _, process in ipairs(processes) do
      local names = members[process]
      if redis.call('PUBLISH', ARGV[3] .. process,
          table.concat(names, ' ') .. '\\n' .. body) == 0 then
        for _, channel in ipairs(names) do
          if redis.call('PUBLISH', ARGV[2] .. process, channel .. '\\n' .. body) == 0 then
            left[#left + 1] = channel
          end
        end
      end
    end
    answers[#answers + 1] = left
  end
end
return answers
"""
_DIRECT_SHA = hashlib.sha1(_DIRECT_LUA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

_PUBLISH, _GROUP = b"p", b"g"

# channels_redis' group_send to the members a direct send missed, in one round trip a Redis
# server (its own trims the expired messages in a pipeline first): KEYS the process keys,
# ARGV a message for each (its channels in `__asgi_channel__`), then each key's capacity,
# then now, the messages' expiry and its cutoff. Returns how many keys were over capacity.
_SETS_LUA = """
local over = 0
local now, expiry, cutoff = ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    over = over + 1
  end
end
return over
"""


class _DirectBatcher(Batcher[tuple[bytes, bytes, bytes]]):
    """Direct messages on one Redis server, one request in flight, in the order asked (a
    watcher sees a user's online and offline in the order they happened): `(b"p", topic,
    body)` a PUBLISH, `(b"g", group key, body)` one to each of the group's members. PUBLISHes
    alone go as a pipeline; with any group in the batch, everything goes in one script
    (`_DIRECT_LUA`). A PUBLISH each on its own pooled connection took a connection per
    message in flight: at 1,000 video chat matches a second, 700-1,150 new connections a
    step (benchmarks/matchmaking.py, a fifth of a server's busy time spent opening them).
    Every CallsApp message nudges two devices' groups: a pipeline reading their members,
    then one of PUBLISHes, were a seventh of a CallsApp server's CPU."""

    def __init__(self, client: Any, group_expiry: int, topic_prefix: str, many_prefix: str) -> None:
        super().__init__()
        self._client = client
        self._group_expiry = group_expiry
        self._topic_prefix = topic_prefix
        self._many_prefix = many_prefix

    async def publish(self, topic: str, body: bytes) -> bool:
        """True when some subscriber received it."""
        return bool(await self.call((_PUBLISH, topic.encode(), body)))

    async def group_publish(self, key: bytes, body: bytes) -> list[str]:
        """The members no process received it for (and those of no process)."""
        missed = await self.call((_GROUP, key, body))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in missed]

    async def send_batch(self, items: list[tuple[bytes, bytes, bytes]]) -> list[Any]:
        if all(kind == _PUBLISH for kind, _, _ in items):
            async with self._client.pipeline(transaction=False) as pipe:
                for _, topic, body in items:
                    pipe.publish(topic, body)
                return list(await pipe.execute())
        keys = [target for kind, target, _ in items if kind == _GROUP]
        args: list[Any] = [
            int(time.time()) - self._group_expiry,
            self._topic_prefix,
            self._many_prefix,
        ]
        for item in items:
            args += item
        try:
            return list(await self._client.evalsha(_DIRECT_SHA, len(keys), *keys, *args))
        except NoScriptError:  # a fresh or restarted server: nothing ran
            await self._client.script_load(_DIRECT_LUA)
            return list(await self._client.evalsha(_DIRECT_SHA, len(keys), *keys, *args))


class LeanRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        # channel -> the future its consumer waits on (at most one receiver per channel)
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        # channel -> what came while its consumer was busy; only for channels that need one
        self._pending: dict[str, collections.deque[Message]] = {}
        # process channel ("specific.<client>!") -> its open channels, and its reader
        self._open: dict[str, set[str]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._direct: asyncio.Task[None] | None = None  # this process's pub/sub reader
        # loop -> Redis server index -> its PUBLISH batcher (direct messages)
        self._batchers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[int, _DirectBatcher]
        ] = weakref.WeakKeyDictionary()

    def create_pool(self, index: int) -> Any:
        """A pool that waits for a free connection instead of raising (realtime.redis)."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        return async_blocking_pool(host.pop("address"), **host)

    async def group_add_many(self, groups: list[str], channel: str) -> None:
        """`group_add` of each of `groups`, in one round trip per Redis server: channels_redis
        sends a group's ZADD and its EXPIRE as two (a socket's connect joined four groups, in
        eight round trips, each a write to the socket and a wake-up of the event loop)."""
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        by_server: dict[int, list[str]] = {}
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
            by_server.setdefault(self.consistent_hash(group), []).append(group)
        for index, names in by_server.items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for group in names:
                    pipe.zadd(self._group_key(group), {channel: time.time()})
                    pipe.expire(self._group_key(group), self.group_expiry)
                await pipe.execute()

    async def new_channel(self, prefix: str = "specific") -> str:
        name: str = await super().new_channel(prefix)
        self._open.setdefault(self.non_local_name(name), set()).add(name)
        return name

    def receive(self, channel: str) -> Any:
        """The next message of `channel`: a future for a process-local channel (awaitable,
        and cancellable like a task), channels_redis' own receive for any other."""
        if "!" not in channel:
            return super().receive(channel)
        assert self.require_valid_channel_name(channel)
        real = self.non_local_name(channel)
        assert real.endswith(self.client_prefix + "!"), "Wrong client prefix"
        loop = asyncio.get_running_loop()
        self._adopt(loop)
        waiter: asyncio.Future[Message] = loop.create_future()
        self._open.setdefault(real, set()).add(channel)
        pending = self._pending.get(channel)
        if pending:
            waiter.set_result(pending.popleft())
            if not pending:
                del self._pending[channel]
            return waiter
        if channel in self._waiters:
            raise RuntimeError(f"{channel} already has a receiver")
        self._waiters[channel] = waiter
        waiter.add_done_callback(functools.partial(self._waiter_done, channel))
        reader = self._readers.get(real)
        if reader is None or reader.done():
            # A context of its own: not the structlog connection id of the socket that asked.
            self._readers[real] = loop.create_task(self._read(real), context=contextvars.Context())
        if self._direct is None or self._direct.done():
            self._direct = loop.create_task(self._read_direct(), context=contextvars.Context())
        return waiter

    def direct_topic(self, channel: str) -> str:
        """The pub/sub channel of the process that owns `channel` (a process-local one)."""
        return self.prefix + "direct:" + self.non_local_name(channel)

    async def send_direct(self, channel: str, message: Message) -> bool:
        """Hand `message` to the process that owns `channel` through its subscription; False
        when no process received it (then send it through the sorted set)."""
        body = channel.encode() + b"\n" + self.serialize(message)
        # The server the owner subscribes on: hashed by the process channel, as it does.
        index = self.consistent_hash(self.non_local_name(channel))
        return await self._publishes(index).publish(self.direct_topic(channel), body)

    def deliver_local(self, channel: str, message: Message) -> bool:
        """Hand `message` over in memory when `channel` belongs to this process (two sockets
        of one process: half of video chat's partners on two processes): no PUBLISH, no
        read and decode on the way back. False for another process's channel."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or not self.non_local_name(channel).endswith(
            self.client_prefix + "!"
        ):
            return False
        self._deliver(channel, dict(message))  # a copy of its own, as Redis would give
        return True

    def _publishes(self, index: int) -> _DirectBatcher:
        loop = asyncio.get_running_loop()
        per_loop = self._batchers.get(loop)
        if per_loop is None:
            per_loop = self._batchers[loop] = {}
        batcher = per_loop.get(index)
        if batcher is None:
            batcher = per_loop[index] = _DirectBatcher(
                self.connection(index),
                self.group_expiry,
                self.prefix + "direct:",
                self.prefix + "directs:",
            )
        return batcher

    async def group_send_direct(self, group: str, message: Message) -> None:
        """`group_send` through each member's process subscription: one script reads the
        members and PUBLISHes to each (batched with the group sends asked meanwhile), where
        channels_redis's takes three round trips, then on the receiving side a pop, a backup
        copy and its clean-up. A member no process received it for gets it through the
        sorted set. In order with this process's other direct messages to the same server
        (one batcher), not with what goes through the sorted set."""
        index = self.consistent_hash(group)
        if len(self.hosts) > 1:
            # A PUBLISH reaches the subscribers of its own server only, and a process
            # subscribes where its channel hashes: read the members, then send to each.
            expired = int(time.time()) - self.group_expiry
            key = self._group_key(group)
            members = await self.connection(index).zrangebyscore(key, f"({expired}", "+inf")
            channels = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            await self.send_to_members(channels, message)
            return
        missed = await self._publishes(index).group_publish(
            self._group_key(group), self.serialize(message)
        )
        if missed:
            await self._send_to_sets(group, missed, message)

    async def _send_to_sets(self, group: str, channels: list[str], message: Message) -> None:
        """channels_redis' group_send to `channels` (members a direct send missed): one
        message a process key, one script a Redis server. A send each took four round trips
        a member: after a crash, every announcement to a channel paid them for each of the
        dead process's members still in its group, until the group's expiry."""
        by_server, messages, capacities = self._map_channel_keys_to_connection(channels, message)
        now = time.time()
        for index, keys in by_server.items():
            args = [messages[k] for k in keys] + [capacities[k] for k in keys]
            over = await self.connection(index).eval(
                _SETS_LUA, len(keys), *keys, *args, now, self.expiry, int(now) - int(self.expiry)
            )
            if over:
                log.info("%s of %s channels over capacity in group %s", over, len(keys), group)

    async def send_to_members(self, channels: list[str], message: Message) -> None:
        """`group_send_direct` to a group's members read already (realtime.opening reads a
        presence group's in the connect's own script)."""
        local = [channel for channel in channels if "!" in channel]
        # Side by side: the PUBLISHes go in one batch, not a round trip each in turn.
        received = await asyncio.gather(*(self.send_direct(c, message) for c in local))
        missed = {c for c, ok in zip(local, received, strict=True) if not ok}
        for channel in channels:
            if "!" not in channel or channel in missed:
                await self.send(channel, message)

    def close_channel(self, channel: str) -> None:
        """The consumer of `channel` is gone: drop what waits for it and stop delivering to
        it (its receive future may have been resolved already, so a cancel cannot say so)."""
        real = self.non_local_name(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None:
            waiter.cancel()
        self._pending.pop(channel, None)
        channels = self._open.get(real)
        if channels is None:
            return
        channels.discard(channel)
        if not channels:
            del self._open[real]
            reader = self._readers.pop(real, None)
            if reader is not None:
                # Safe mid-read: a message taken from Redis sits in its backup queue until
                # the next read puts it back (channels_redis cancels its readers the same way).
                reader.cancel()
        if not self._open and self._direct is not None:
            # No socket left to deliver to: unsubscribe (senders fall back to the sorted set).
            self._direct.cancel()
            self._direct = None

    async def close_pools(self) -> None:
        readers = list(self._readers.values())
        if self._direct is not None:
            readers.append(self._direct)
            self._direct = None
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        self._readers.clear()
        await super().close_pools()

    # --- internals
    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """A server has one loop; tests start a loop per test: forget the last one's state."""
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed() and self._waiters:
            raise RuntimeError("Two event loops are trying to receive() on one channel layer")
        self._loop = loop
        self._waiters.clear()
        self._readers.clear()
        self._direct = None

    def _waiter_done(self, channel: str, waiter: asyncio.Future[Message]) -> None:
        if waiter.cancelled() and self._waiters.get(channel) is waiter:
            # The consumer stopped waiting (it is closing): as channels_redis, drop its buffer.
            self.close_channel(channel)

    async def _read(self, real: str) -> None:
        while self._open.get(real):
            try:
                target, message = await self.receive_single(real)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._fail_one(real, exc):
                    continue
                return  # nobody waits: the next receive starts a reader again
            for channel in target if isinstance(target, list) else (target,):
                self._deliver(channel, message)

    async def _read_direct(self) -> None:
        """This process's direct messages, for as long as it has sockets. A dropped
        subscription is made again after a pause; meanwhile senders use the sorted set."""
        while self._open:
            # One per process channel ("specific.<client>!"; a channel of another prefix
            # opened later is not subscribed and gets its messages through the sorted set).
            reals = list(self._open)
            pubsub = self.connection(self.consistent_hash(reals[0])).pubsub(
                ignore_subscribe_messages=True
            )
            try:
                # Two topics a process: one message for one channel, and one for many (a
                # group's members on this process: `group_send_direct`), read and decoded
                # once and handed to each, as channels_redis' group_send does.
                await pubsub.subscribe(
                    *(self.prefix + "direct:" + real for real in reals),
                    *(self.prefix + "directs:" + real for real in reals),
                )
                async for item in pubsub.listen():
                    channels, _, body = item["data"].partition(b"\n")
                    message = self.deserialize(body)
                    for channel in channels.split(b" "):
                        # A dict of its own each, as Redis would give (and deliver_local).
                        self._deliver(channel.decode(), dict(message))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("direct messages: subscription lost (%r)", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _deliver(self, channel: str, message: Message) -> None:
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        if channel not in self._open.get(self.non_local_name(channel), ()):
            return  # its consumer is gone (channels_redis kept these forever)
        pending = self._pending.get(channel)
        if pending is None:
            pending = self._pending[channel] = collections.deque(maxlen=self.capacity)
        pending.append(message)

    def _fail_one(self, real: str, exc: Exception) -> bool:
        """A failed Redis read goes to one waiting receiver, as channels_redis' lock holder
        would have got it; the reader then reads again for the others."""
        for channel, waiter in list(self._waiters.items()):
            if self.non_local_name(channel) == real and not waiter.done():
                del self._waiters[channel]
                waiter.set_exception(exc)
                return True
        log.warning("channel layer read failed with no receiver waiting: %r", exc)
        return False
