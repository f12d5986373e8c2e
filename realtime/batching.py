"""Calls batched per event loop: what is asked while one batch is on its way goes together in
the next one, one request in flight. Under load the batches grow and each call gets cheaper
(one write and one read a batch); idle, a call goes out on the next turn of the loop.

Subclasses say how a batch is sent (`send_batch`: one reply per item, an Exception instance
for an item that failed alone). Used for Redis pipelines: matchmaking's steps
(videochat.matchmaking) and the channel layer's direct PUBLISHes (realtime.layers).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
T = TypeVar("T")


class PerLoop(Generic[T]):
    """One `factory()` per event loop, made on first use: a server process runs one loop,
    tests run many, and a batcher's futures and tasks belong to the loop that made them."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        found = self._made.get(loop)
        if found is None:
            found = self._made[loop] = self._factory()
        return found


class Batcher(Generic[Item]):
    # Seconds a batch waits for company before it goes (0: the next turn of the loop). Only
    # for callers that do not wait on the reply to go on (stream acks): the others would wait.
    gather: float = 0.0

    def __init__(self) -> None:
        self._waiting: list[tuple[Item, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def send_batch(self, items: list[Item]) -> list[Any]:
        raise NotImplementedError

    async def call(self, item: Item) -> Any:
        return await self.submit(item)

    def submit(self, item: Item) -> asyncio.Future[Any]:
        """Queue `item`; the future gets its reply (or its exception)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((item, reply))
        if self._sender is None:
            # Its own context: not the log context of the socket that happened to ask first.
            self._sender = loop.create_task(self._send(), context=contextvars.Context())
        return reply

    async def _send(self) -> None:
        try:
            while self._waiting:
                if self.gather:
                    await asyncio.sleep(self.gather)
                batch, self._waiting = self._waiting, []
                try:
                    replies = await self.send_batch([item for item, _ in batch])
                except asyncio.CancelledError:  # the loop is closing: so are the callers
                    for _, reply in [*batch, *self._waiting]:
                        reply.cancel()
                    raise
                except Exception as exc:
                    for _, reply in batch:
                        if not reply.done():
                            reply.set_exception(exc)
                    continue
                for (_, reply), value in zip(batch, replies, strict=True):
                    if reply.done():  # its caller was cancelled
                        continue
                    if isinstance(value, Exception):
                        reply.set_exception(value)
                    else:
                        reply.set_result(value)
        finally:
            self._sender = None
