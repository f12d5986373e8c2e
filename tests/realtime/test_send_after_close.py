"""A socket the server closed may still have events on their way to it (a member.left, a
tick, the rest of a storm's announcements): they are dropped. The ASGI server refuses a send
after websocket.close (uvicorn raises RuntimeError), and each one ended its consumer with a
logged traceback; a reconnect storm on a loaded host logged thousands."""

from __future__ import annotations

from typing import Any

from realtime.consumers import BaseConsumer


class SpecSend:
    """What an ASGI server does with a consumer's messages: nothing may follow a close."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if any(m["type"] == "websocket.close" for m in self.messages):
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r} after close")
        self.messages.append(message)


async def test_events_after_the_server_closed_the_socket_are_dropped() -> None:
    server = SpecSend()
    consumer = BaseConsumer()
    consumer.base_send = server
    await consumer.send(text_data="before")
    await consumer.close(code=4000)
    await consumer.send(text_data="late")  # raised before
    await consumer.send_json({"type": "member.left"})
    await consumer.close(code=4000)  # a second close (socket.close, then state_lost)
    assert server.messages == [
        {"type": "websocket.send", "text": "before"},
        {"type": "websocket.close", "code": 4000},
    ]
