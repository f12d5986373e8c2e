"""config.logs.log_context on a socket: the access line carries the close code the client
sent, and a server whose receive returns a future (realtime.wsprotocol) gets no task per
receive from the wrapper."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from config.logs import log_context


@pytest.mark.parametrize("server_returns", ["future", "coroutine"])
async def test_socket_closed_line_has_the_clients_code(server_returns: str) -> None:
    events = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 4000}]
    kinds: list[bool] = []

    def receive() -> Any:
        event = events.pop(0)
        if server_returns == "coroutine":

            async def later() -> dict[str, Any]:
                return event

            return later()
        future = asyncio.get_running_loop().create_future()
        future.set_result(event)
        return future

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            received = receive()
            kinds.append(isinstance(received, asyncio.Task))
            if (await received)["type"] == "websocket.disconnect":
                return

    async def send(message: dict[str, Any]) -> None: ...

    scope = {"type": "websocket", "path": "/ws/x/", "headers": []}
    with capture_logs() as logs:
        await log_context(app)(scope, receive, send)
    closed = [line for line in logs if line["event"] == "socket closed"]
    assert [line["code"] for line in closed] == [4000]
    if server_returns == "future":
        assert kinds == [False, False]


async def test_a_server_close_names_the_code_before_the_disconnect_that_follows() -> None:
    events = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4401})
        await receive()

    scope = {"type": "websocket", "path": "/ws/x/", "headers": []}
    with capture_logs() as logs:
        await log_context(app)(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert [(line["event"], line.get("code")) for line in logs] == [
        ("socket open", None),
        ("socket closed", 4401),
    ]
