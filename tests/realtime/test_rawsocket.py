"""Pre-framed writes below ASGI (realtime.rawsocket) on a real uvicorn server, read back by
the websockets client: bytes intact, in order with the server's own frames, refused once
the socket closes, dropped rather than buffered for a reader that stopped reading."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from realtime.rawsocket import (
    MAX_BUFFERED_BYTES,
    SCOPE_KEY,
    RawSocketMiddleware,
    Write,
    binary_frame,
    raw_socket_for,
)
from tests.waiting import until

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def parse(data: bytes) -> Frame:
    """Read `data` with the websockets library's own frame parser, as a client would."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_binary_frame_is_one_final_unmasked_binary_frame(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = parse(binary_frame(payload))
    assert frame.opcode is Opcode.BINARY and frame.fin and not frame.rsv1
    assert frame.data == payload


def test_unknown_servers_get_no_raw_socket() -> None:
    async def send(message: dict[str, Any]) -> None: ...

    class Other:
        async def send(self, message: dict[str, Any]) -> None: ...

    assert raw_socket_for(send) is None
    assert raw_socket_for(Other().send) is None


async def test_raw_frames_arrive_intact_and_in_order_with_asgi_sends(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    results: list[Write] = []
    closed_write: list[Write] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope[SCOPE_KEY]
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "first"})
        results.append(raw.write(binary_frame(b"\x01raw-one")))
        await send({"type": "websocket.send", "bytes": b"asgi"})
        results.append(raw.write(binary_frame(bytes(300))))
        await send({"type": "websocket.close", "code": 1000})
        closed_write.append(raw.write(binary_frame(b"too late")))

    url = await uvicorn_in_loop(RawSocketMiddleware(app))
    async with connect(url, compression=None) as ws:
        got = [await ws.recv() for _ in range(4)]
        with pytest.raises(Exception, match="1000"):
            await ws.recv()
    assert got == ["first", b"\x01raw-one", b"asgi", bytes(300)]
    assert results == [Write.SENT, Write.SENT]
    assert closed_write == [Write.CLOSED]


async def test_a_reader_that_stops_reading_loses_frames_not_memory(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    """Once the kernel's buffers are full, the server buffers at most MAX_BUFFERED_BYTES for
    that reader (a few seconds of voice) and refuses further frames as BEHIND."""
    outcome: dict[str, Any] = {}
    frame = binary_frame(bytes(1200))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope[SCOPE_KEY]
        await receive()
        await send({"type": "websocket.accept"})
        for n in range(100_000):  # at most 120 MB; the kernel's buffers are far smaller
            result = raw.write(frame)
            if result is not Write.SENT:
                outcome.update(result=result, sent=n)
                break
            if n % 64 == 0:
                await asyncio.sleep(0)  # let the event loop flush what it can
        outcome["buffered"] = raw.transport.get_write_buffer_size()
        outcome["again"] = raw.write(frame)
        await receive()  # until the client goes away

    url = await uvicorn_in_loop(RawSocketMiddleware(app))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((url.split("/")[2].split(":")[0], int(url.split(":")[2].rstrip("/"))))
    sock.setblocking(False)
    ws = await connect(url, sock=sock, compression=None)
    # The client reads nothing (its recv() is never called) until the server's buffer fills.
    await until(lambda: "again" in outcome, what="the server's writes fell behind")
    ws.transport.abort()  # a closing handshake would wait behind the full buffers
    assert outcome["result"] is Write.BEHIND and outcome["again"] is Write.BEHIND
    assert outcome["sent"] > 0
    # Bounded by the limit plus the frame that crossed it.
    assert MAX_BUFFERED_BYTES < outcome["buffered"] <= MAX_BUFFERED_BYTES + len(frame)
