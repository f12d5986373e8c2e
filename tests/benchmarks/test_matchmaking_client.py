"""benchmarks/matchmaking.py's end-to-end client: its own view of whether a user is in a
match decides what counts as a "double match", so that view must follow every frame."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.matchmaking import ClientConfig, E2EClient, Sock


def client() -> E2EClient:
    cfg = ClientConfig(
        index=0,
        clients=1,
        urls=[],
        jobs=[],
        prebanned=[],
        rates=[],
        seconds=1,
        leave_after=3,
        chat_mean=1,
        log_dir="",
    )
    return E2EClient(cfg)


async def test_a_late_end_of_the_previous_visit_is_not_a_double_match() -> None:
    """An overloaded server answered the previous visit's queue.leave after the client gave
    up waiting: the late queue.left ends that match before the new visit's match.found."""
    c = client()
    s = Sock(7, ws=None)
    s.current = "old-match"  # found while leaving, and queue.left not seen in time
    now = time.monotonic()
    found = {"type": "match.found", "match_id": "new", "role": "answer", "partner": {"name": "u8"}}
    for frame in ({"type": "queue.left"}, found, {"type": "_closed", "code": 1000}):
        s.inbox.put_nowait((now, frame))
    await c._visit(s, now)
    [f] = [e for e in c.log if e[0] == "F"]
    assert f[2] == "new" and f[9] is False  # not "still in another match"


def test_an_arrival_takes_an_idle_user_whose_socket_is_open() -> None:
    c = client()
    for uid in range(10):
        c.socks[uid] = Sock(uid, ws=None)
        c.socks[uid].dead = uid % 2 == 0
        c.idle.append(uid)
    taken = [c.take_idle() for _ in range(6)]
    assert sorted(t for t in taken[:5] if t is not None) == [1, 3, 5, 7, 9]
    assert taken[5] is None and c.idle == []


async def test_a_refusal_that_closes_before_the_hello_is_sent_is_still_a_refusal() -> None:
    """A busy client sent its hello after the server had already refused the connect
    (error "banned", close 4403): the send failed on the closed socket, and the client
    counted a "banned user let in" without reading the error frame that had arrived."""
    import json

    import websockets

    async def refuse(ws: Any) -> None:
        await ws.send(json.dumps({"type": "error", "code": "banned", "detail": "banned"}))
        await ws.close(4403)

    c = client()
    async with websockets.serve(refuse, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        async def open_late(job: dict[str, Any], n: int) -> Any:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}", max_queue=None)
            await ws.wait_closed()  # the refusal is in before the hello goes out
            return ws

        c.open = open_late  # type: ignore[method-assign]
        assert await c.refused({"uid": 5, "hello": {"type": "hello"}}, 0)
    assert [e for e in c.log if e[0] == "refusal"] == []
