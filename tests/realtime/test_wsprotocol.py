"""realtime.wsprotocol, the uvicorn protocol every server here runs (`--ws
realtime.wsprotocol:LeanWebSocketProtocol`), on a real uvicorn with the websockets client:
uvicorn's behaviour (frames in order, close codes both ways, the size limit, back-pressure)
with less held per idle socket (no queue, no task, no handshake copies)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.wsprotocol import LeanWebSocketProtocol

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = "realtime.wsprotocol:LeanWebSocketProtocol"


async def until(condition: Any, spins: int = 100_000) -> None:
    """Let the loop run (no timer) until `condition()` holds."""
    for _ in range(spins):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_every_uvicorn_we_start_runs_the_lean_protocol() -> None:
    for path in ["Procfile", "README.md", "benchmarks/_common.py", "tests/conftest.py"]:
        text = (ROOT / path).read_text()
        assert 'websockets-sansio"' not in text and "--ws websockets-sansio" not in text, path
        assert PROTOCOL in text, path
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file():
            assert not re.search(r"--ws[ =]websockets-sansio", path.read_text(errors="replace"))


async def test_an_idle_socket_waits_on_a_future_and_keeps_no_handshake(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, Any] = {}
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        proto = send.__self__
        waiting = receive()
        seen.update(
            proto=type(proto),
            future=isinstance(waiting, asyncio.Future) and not isinstance(waiting, asyncio.Task),
            handshake=(proto.request, proto.response),
            headers=dict(scope["headers"]).get(b"x-kept"),
        )
        got.append(await waiting)
        while (event := await receive())["type"] == "websocket.receive":
            got.append(event.get("text") or event.get("bytes"))
        got.append(event)

    url = await uvicorn_in_loop(app)
    async with connect(url, compression=None, additional_headers={"X-Kept": "yes"}) as ws:
        await ws.send("one")
        for item in ["two", b"three", "four"]:
            await ws.send(item)
        await ws.close(code=4000)
    await until(lambda: len(got) == 5)
    assert seen == {
        "proto": LeanWebSocketProtocol,
        "future": True,
        "handshake": (None, None),
        "headers": b"yes",
    }
    assert got[0] == {"type": "websocket.receive", "text": "one"}
    assert got[1:4] == ["two", b"three", "four"]
    assert got[4]["type"] == "websocket.disconnect" and got[4]["code"] == 4000


async def test_server_close_code_and_size_limit(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        event = await receive()
        if event.get("text") == "bye":
            await send({"type": "websocket.close", "code": 4321})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    url = await uvicorn_in_loop(app)
    async with connect(url, compression=None) as ws:
        await ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4321

    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send(b"x" * 65537)  # over --ws-max-size (65536)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_reading_pauses_while_the_app_is_behind(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    protos: list[Any] = []
    reading = asyncio.Event()
    got: list[str] = []
    count = 200

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        protos.append(send.__self__)
        await reading.wait()
        while len(got) < count:
            got.append((await receive())["text"])

    url = await uvicorn_in_loop(app)
    async with connect(url, compression=None) as ws:
        for i in range(count):
            await ws.send(f"{i:04d}" + "x" * 1000)
        await until(lambda: bool(protos) and protos[0].read_paused)
        proto = protos[0]
        # Paused after one parsed chunk: the rest waits in the kernel, not in our memory.
        assert 0 < len(proto.queue.items) < count
        reading.set()
        await until(lambda: len(got) == count)
    assert [g[:4] for g in got] == [f"{i:04d}" for i in range(count)]
    assert not proto.read_paused or proto.queue.empty()


async def test_a_message_the_app_waits_for_does_not_pause_reading(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    """A press or an audio packet that finds the app waiting costs no pause and resume of
    the socket's reading (two system calls a frame under uvicorn's own protocol)."""
    pauses: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        transport = send.__self__.transport
        pause = transport.pause_reading

        def counted() -> None:
            pauses.append(1)
            pause()

        transport.pause_reading = counted
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event["text"]})

    url = await uvicorn_in_loop(app)
    async with connect(url, compression=None) as ws:
        for i in range(20):
            await ws.send(str(i))
            assert await ws.recv() == str(i)
    assert pauses == []


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_socket_logs_no_info_lines_of_its_own_but_its_errors(uvicorn_in_loop) -> None:  # type: ignore[no-untyped-def]
    """uvicorn logged "[accepted]" and "connection open" at INFO for every socket (5 % of a
    reconnect storm's server time, unstructured, beside the access log's own line), with
    uvicorn.error at INFO as production has it; an error in the app is still logged."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    ours = logging.getLogger("realtime.wsprotocol")
    records = _Records()
    level = uvicorn_error.level
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if scope["path"] == "/fail":
            done.set()
            raise RuntimeError("the app failed")
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event["text"]})
        done.set()

    try:
        url = await uvicorn_in_loop(app)  # configures uvicorn's loggers: our handler after
        uvicorn_error.addHandler(records)
        ours.addHandler(records)
        uvicorn_error.setLevel(logging.INFO)
        async with connect(url, compression=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        await done.wait()
        assert [r.getMessage() for r in records.records] == []
        done.clear()
        async with connect(url + "fail", compression=None) as ws:
            await done.wait()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        errors = [r for r in records.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == ["Exception in ASGI application\n"]
    finally:
        uvicorn_error.removeHandler(records)
        ours.removeHandler(records)
        uvicorn_error.setLevel(level)
