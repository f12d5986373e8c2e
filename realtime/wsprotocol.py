"""uvicorn's websockets-sansio protocol, lighter for the idle sockets a server mostly holds.

Start uvicorn with `--ws realtime.wsprotocol:LeanWebSocketProtocol` (Procfile, deploy/, tests,
benchmarks do). What it changes, measured by benchmarks/idle_memory.py:

- the receive queue: uvicorn's `asyncio.Queue` (about 3 KiB with its deques) becomes an inbox
  that holds one waiting future, and a deque only while the app is behind; `receive()`
  returns that future, so Channels' dispatch loop waits on it without a task of its own;
- the `writable` event: a flag whose waiters list exists only while a send is held up;
- reading pauses only while a received message waits for the app (uvicorn paused after each
  one, two system calls a frame, though the app was already waiting for it);
- the handshake: the parsed request's headers and the prepared response (about 3 KiB) are
  dropped once the socket is accepted; the scope keeps the raw headers the app reads;
- its logger: this module's (WARNING in config/logs.py), not `uvicorn.error`, so a socket's
  open and close are not two or three unstructured INFO lines each (the access log has
  them, with the connection id); its warnings and errors are logged as ours are.

Behaviour is uvicorn's: frames in order, close codes, `--ws-max-size`, and back-pressure
(reading pauses while a received message waits for the app, and resumes when the app asks
for the next one). realtime/rawsocket.py writes below it as below the original.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

Event = dict[str, Any]
# Not a child of uvicorn.error: uvicorn's logging setup resets its children's levels.
SOCKET_LOGGER = logging.getLogger(__name__)


class _Inbox:
    """What uvicorn's protocol puts for the app (`put_nowait`), handed to one waiter."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Event] | None = None
        self.waiter: asyncio.Future[Event] | None = None

    def put_nowait(self, event: Event) -> bool:
        """True: handed straight to the app's waiting receive(); False: queued."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
            return True
        if self.items is None:
            self.items = collections.deque()
        self.items.append(event)
        return False

    def empty(self) -> bool:
        return not self.items

    def next(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Event]:
        future: asyncio.Future[Event] = loop.create_future()
        if self.items:
            future.set_result(self.items.popleft())
            if not self.items:
                self.items = None
            return future
        if self.waiter is not None and not self.waiter.done():
            raise RuntimeError("receive() called while another receive() waits")
        self.waiter = future
        return future


class _Flag:
    """asyncio.Event's is_set/set/clear/wait, without a deque per socket."""

    __slots__ = ("value", "waiters")

    def __init__(self) -> None:
        self.value = True
        self.waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self.value

    def set(self) -> None:
        self.value = True
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self.value = False

    async def wait(self) -> None:
        while not self.value:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            await waiter


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "[accepted]", "connection open", "connection closed" for every socket were 5 % of a
        # reconnect storm's server time (benchmarks/reconnect_storm.py).
        self.logger = self.conn.logger = SOCKET_LOGGER
        self.queue: Any = _Inbox()
        self.writable: Any = _Flag()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Sent: nothing reads the handshake again (the scope has its own headers). The
            # request's headers are emptied too: the websockets parser's generator frame keeps
            # a reference to the request for the socket's life.
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, except that reading pauses only once a message has to wait for the
        app: uvicorn paused after every message and resumed at the app's next receive(),
        two epoll_ctl calls and the selector's bookkeeping (20-40 us here) per frame, for
        every audio packet and press, while the app was waiting for it anyway."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the app is past websocket.close (uvicorn: reads go on for the reply)
        inbox: _Inbox = self.queue
        event: Event
        if self.curr_msg_data_type == "text":
            try:
                event = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            event = {"type": "websocket.receive", "bytes": data}
        if not inbox.put_nowait(event) and not self.read_paused:
            # Back-pressure as uvicorn's: the app is behind, read no more until it asks.
            self.read_paused = True
            self.transport.pause_reading()

    def receive(self) -> asyncio.Future[Event]:  # type: ignore[override]
        """The next ASGI event, as a future (awaitable; cancelling it stops waiting)."""
        inbox: _Inbox = self.queue
        future = inbox.next(self.loop)
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return future
