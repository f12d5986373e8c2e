"""Two daphne processes sharing one Redis and one database: what one emits, the other's
sockets receive."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
import websockets
from django.conf import settings

from tests.conftest import session_cookie_for
from tests.factories import make_contacts

pytestmark = pytest.mark.django_db(transaction=True)


def ws_headers(cookie: str, server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": server.url}


def post_logout(server, cookie: str) -> int:  # type: ignore[no-untyped-def]
    """Log out through the second process's real HTTP logout view (CSRF and all)."""
    http = requests.Session()
    http.cookies.set(settings.SESSION_COOKIE_NAME, cookie)
    page = http.get(f"{server.url}/accounts/logout/", timeout=10).text
    token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    resp = http.post(
        f"{server.url}/accounts/logout/",
        data={"csrfmiddlewaretoken": token},
        headers={"Referer": f"{server.url}/accounts/logout/"},
        timeout=10,
    )
    return resp.status_code


def test_logout_on_one_process_closes_the_socket_on_the_other(asgi_servers, make_user):
    one, two = asgi_servers(), asgi_servers()
    user = make_user()
    cookie = session_cookie_for(user)

    async def scenario() -> int | None:
        async with websockets.connect(
            f"{one.ws_url}/ws/presence/", additional_headers=ws_headers(cookie, one)
        ) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}
            status = await asyncio.to_thread(post_logout, two, cookie)
            assert status == 200
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout=5)
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario()) == 4001


def test_presence_crosses_processes(asgi_servers, make_user):
    one, two = asgi_servers(), asgi_servers()
    watcher, friend = make_user(), make_user()
    make_contacts(watcher, friend)
    w_cookie, f_cookie = session_cookie_for(watcher), session_cookie_for(friend)

    async def scenario() -> list[dict]:
        seen = []
        async with websockets.connect(
            f"{one.ws_url}/ws/presence/", additional_headers=ws_headers(w_cookie, one)
        ) as w:
            await w.send(json.dumps({"type": "presence.watch", "user_ids": [friend.pk]}))
            seen.append(json.loads(await w.recv()))
            async with websockets.connect(
                f"{two.ws_url}/ws/presence/", additional_headers=ws_headers(f_cookie, two)
            ):
                seen.append(json.loads(await asyncio.wait_for(w.recv(), timeout=5)))
            seen.append(json.loads(await asyncio.wait_for(w.recv(), timeout=5)))
        return seen

    first, arrived, left = asyncio.run(scenario())
    assert first["statuses"] == {str(friend.pk): False}
    assert arrived["statuses"] == {str(friend.pk): True}
    assert left["statuses"] == {str(friend.pk): False}
