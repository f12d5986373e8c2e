"""Two users on two daphne processes sharing Redis and the database: matched, signalling,
chatting, skipping and reporting across processes."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import requests
import websockets
from django.conf import settings
from PIL import Image

from tests.conftest import session_cookie_for
from videochat.models import Report

pytestmark = pytest.mark.django_db(transaction=True)

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 8 2 IN IP4 127.0.0.1\r\ns=-\r\n"}


def connect(server: Any, cookie: str) -> Any:
    return websockets.connect(
        f"{server.ws_url}/ws/videochat/",
        additional_headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
            "Origin": server.url,
        },
    )


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=5))


async def say(ws: Any, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


def post_report(server: Any, cookie: str) -> requests.Response:
    """The browser's report: CSRF cookie from the page, multipart with a still."""
    http = requests.Session()
    http.cookies.set(settings.SESSION_COOKIE_NAME, cookie)
    assert http.get(f"{server.url}/videochat/", timeout=10).status_code == 200
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, format="WEBP")
    return http.post(
        f"{server.url}/videochat/report/",
        data={
            "reason": "harassment",
            "chat_lines": json.dumps([{"from": "partner", "text": "across"}]),
        },
        files={"frame": ("still.webp", buf.getvalue(), "image/webp")},
        headers={"X-CSRFToken": http.cookies["csrftoken"], "Referer": f"{server.url}/videochat/"},
        timeout=10,
    )


def test_two_users_on_two_processes_match_signal_chat_and_report(asgi_servers, make_user):
    one, two = asgi_servers(), asgi_servers()
    alice, bob = make_user(), make_user()
    cookie_a, cookie_b = session_cookie_for(alice), session_cookie_for(bob)

    async def scenario() -> str:
        async with connect(one, cookie_a) as a, connect(two, cookie_b) as b:
            for ws in (a, b):
                await say(ws, type="hello", language="en")
                assert (await recv(ws))["type"] == "ready"
            await say(a, type="queue.join")
            assert (await recv(a))["type"] == "queue.waiting"
            await say(b, type="queue.join")
            found_b, found_a = await recv(b), await recv(a)
            assert found_a["type"] == found_b["type"] == "match.found"
            mid = found_a["match_id"]
            assert found_b["match_id"] == mid
            assert {found_a["role"], found_b["role"]} == {"offer", "answer"}
            await say(b, type="signal", match_id=mid, kind="offer", data=OFFER)
            assert await recv(a) == {
                "type": "signal",
                "match_id": mid,
                "kind": "offer",
                "data": OFFER,
            }
            await say(a, type="signal", match_id=mid, kind="answer", data=ANSWER)
            assert (await recv(b))["data"] == ANSWER
            await say(a, type="chat", match_id=mid, text="hi across processes")
            assert (await recv(a))["from"] == "me"
            got = await recv(b)
            assert got["from"] == "partner" and got["text"] == "hi across processes"
            await say(b, type="next")
            assert (await recv(b))["type"] == "queue.waiting"
            assert await recv(a) == {"type": "match.ended", "match_id": mid, "reason": "next"}
            assert (await recv(a))["type"] == "queue.waiting"
            # The skipped user reports from the other process: about the last partner.
            resp = await asyncio.to_thread(post_report, one, cookie_a)
            assert resp.status_code == 201, resp.text
            return mid

    asyncio.run(scenario())
    report = Report.objects.get()
    assert report.reporter == alice and report.reported == bob
    assert report.frame.name.endswith(".webp")


def test_on_uvicorn_frames_written_together_arrive_as_separate_frames_in_order(
    asgi_servers, make_user
):
    """On uvicorn a socket's frames go out pre-framed in one write (realtime.rawsocket): the
    one left behind by a Next gets match.ended and its queue.waiting as two messages, in
    that order, and the socket goes on working after them."""
    one, two = asgi_servers(server="uvicorn"), asgi_servers(server="uvicorn")
    alice, bob = make_user(), make_user()
    cookie_a, cookie_b = session_cookie_for(alice), session_cookie_for(bob)

    async def scenario() -> None:
        async with connect(one, cookie_a) as a, connect(two, cookie_b) as b:
            for ws in (a, b):
                await say(ws, type="hello", language="en")
                assert (await recv(ws))["type"] == "ready"
            await say(a, type="queue.join")
            assert (await recv(a))["type"] == "queue.waiting"
            await say(b, type="queue.join")
            found_b, found_a = await recv(b), await recv(a)
            assert (found_a["role"], found_b["role"]) == ("answer", "offer")
            mid = found_a["match_id"]
            await say(b, type="next", match_id=mid)
            assert (await recv(b))["type"] == "queue.waiting"
            assert await recv(a) == {"type": "match.ended", "match_id": mid, "reason": "next"}
            assert (await recv(a))["type"] == "queue.waiting"
            await say(a, type="queue.leave")
            assert await recv(a) == {"type": "queue.left"}

    asyncio.run(scenario())
