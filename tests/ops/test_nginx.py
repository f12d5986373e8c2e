"""The production path, request by request: nginx (deploy/nginx/comms.conf) in front of two
uvicorn processes. Static files from collectstatic, uploads through X-Accel-Redirect, the
client's address from X-Forwarded-For (country, login throttling), sockets proxied with the
origin check intact. The browser suites run through the same stack (tests/e2e)."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import Profile
from tests.conftest import session_cookie_for
from tests.factories import UserFactory
from tests.nginx_stack import CLIENT_IP_HEADER

pytestmark = pytest.mark.timeout(120)
GERMAN_IP = "5.9.0.1"
RUSSIAN_IP = "95.31.18.1"


def fetch(url: str, *, cookie: str = "", ip: str = "", headers: dict | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if cookie:
        req.add_header("Cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}")
    if ip:
        req.add_header(CLIENT_IP_HEADER, ip)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def stack(proxied_servers):  # type: ignore[no-untyped-def]
    return proxied_servers()


def test_static_files_come_from_nginx(stack) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = fetch(f"{stack.url}/static/shared/js/socket.js")
    assert status == 200 and b"WebSocket" in body
    assert headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    assert "max-age=604800" in headers["Cache-Control"]
    # The ASGI processes do not serve them at all here: it really was nginx.
    backend = stack.backends[0]
    assert fetch(f"{backend.url}/static/shared/js/socket.js")[0] == 404
    wasm = next(Path(collected := stack_static(stack)).glob("vendor/**/*.wasm"), None)
    if wasm is not None:
        rel = wasm.relative_to(collected).as_posix()
        status, headers, _ = fetch(f"{stack.url}/static/{rel}")
        assert status == 200 and headers["Content-Type"] == "application/wasm"


def stack_static(stack) -> Path:  # type: ignore[no-untyped-def]
    from tests.nginx_stack import collected_static

    return collected_static()


def test_uploads_go_out_through_x_accel_redirect(stack) -> None:  # type: ignore[no-untyped-def]
    name = default_storage.save("profiles/2026/11/nginx.jpg", ContentFile(b"photo-bytes"))
    owner = UserFactory()
    Profile.objects.filter(user=owner).update(photo=name)
    viewer = UserFactory()
    status, headers, body = fetch(f"{stack.url}/media/{name}", cookie=session_cookie_for(viewer))
    assert status == 200 and body == b"photo-bytes"
    assert "X-Accel-Redirect" not in headers  # nginx consumed it and sent the file
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Anonymous: the app says no, nginx sends nothing.
    assert fetch(f"{stack.url}/media/{name}")[0] == 404
    # The internal location cannot be asked for directly.
    assert fetch(f"{stack.url}/protected-media/{name}")[0] == 404


def test_country_comes_from_the_real_client_address(stack) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    cookie = session_cookie_for(user)
    status, _, body = fetch(f"{stack.url}/videochat/", cookie=cookie, ip=GERMAN_IP)
    assert status == 200
    assert b'data-me-country="DE"' in body
    # A client cannot claim another address: nginx overwrites X-Forwarded-For.
    status, _, body = fetch(
        f"{stack.url}/videochat/",
        cookie=cookie,
        ip=RUSSIAN_IP,
        headers={"X-Forwarded-For": GERMAN_IP},
    )
    assert b'data-me-country="RU"' in body


def login_attempt(stack, email: str, password: str, ip: str) -> int:  # type: ignore[no-untyped-def]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = urllib.request.Request(f"{stack.url}/accounts/login/", headers={CLIENT_IP_HEADER: ip})
    with opener.open(page, timeout=20) as resp:
        assert resp.status == 200
    token = next(c.value for c in jar if c.name == settings.CSRF_COOKIE_NAME)
    data = urllib.parse.urlencode(
        {"login": email, "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    req = urllib.request.Request(
        f"{stack.url}/accounts/login/",
        data=data,
        headers={CLIENT_IP_HEADER: ip, "Origin": stack.url, "Referer": f"{stack.url}/"},
    )
    try:
        with opener.open(req, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_login_throttling_counts_each_real_client(stack, settings) -> None:  # type: ignore[no-untyped-def]
    users = [UserFactory() for _ in range(settings.AXES_FAILURE_LIMIT + 1)]
    attacker, bystander = "203.0.113.5", "198.51.100.9"
    codes = [login_attempt(stack, u.email, "wrong", attacker) for u in users[:-1]]
    assert codes[:-1] == [200] * (len(codes) - 1) and codes[-1] == 429
    # The attacker's address is paused, even with a right password ...
    assert login_attempt(stack, users[-1].email, "correct-horse-battery", attacker) == 429
    # ... while everyone else, behind the same nginx, logs in (302 to home, followed: 200).
    assert login_attempt(stack, users[-1].email, "correct-horse-battery", bystander) == 200


def test_sockets_pass_through_and_the_origin_check_holds(stack) -> None:  # type: ignore[no-untyped-def]
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(UserFactory())}"

    async def talk(origin: str) -> object:
        async with websockets.connect(
            f"{stack.ws_url}/ws/presence/",
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            open_timeout=10,
        ) as ws:
            await ws.send('{"type": "ping"}')
            return await asyncio.wait_for(ws.recv(), 10)

    assert json.loads(asyncio.run(talk(stack.url))) == {"type": "pong"}  # type: ignore[arg-type]
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(talk("http://evil.example"))
    assert refused.value.response.status_code == 403
