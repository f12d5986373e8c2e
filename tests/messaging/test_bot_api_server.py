"""The Bot API in a real server process (uvicorn, as in production): a waiting getUpdates
costs the process no thread, so a thousand bots waiting are not a thousand threads; and its
answers are those of the Django stack it used to run through."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer
from tests.messaging.test_api import Browser
from tests.messaging.test_bots import BOT_API, bot_call, make_bot, say

pytestmark = pytest.mark.django_db(transaction=True)

WAITING = "callsapp_bot_polls_waiting"


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def polls_waiting(server_url: str) -> float:
    """The server's own count of getUpdates waiting (its /metrics; loopback may read it)."""
    with urllib.request.urlopen(f"{server_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == WAITING:
                return float(sample.value)
    return 0.0


def until_waiting(urls: list[str], count: int) -> None:
    deadline = time.monotonic() + 30
    while sum(polls_waiting(u) for u in urls) != count:
        assert time.monotonic() < deadline, f"never {count} polls waiting"
        time.sleep(0.05)


def poll(url: str, token: str, timeout: int = 20) -> requests.Response:
    return requests.post(
        f"{url}{BOT_API}getUpdates",
        json={"timeout": timeout},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout + 15,
    )


@contextlib.contextmanager
def polls_waiting_for(
    target: str, metric_urls: list[str], tokens: dict[str, str], oz: Browser
) -> Iterator[None]:
    """Every bot's poll (to `target`) waits while the block runs; then each is woken by
    Oz's message to that bot and answers it, well before its 20 s."""
    with concurrent.futures.ThreadPoolExecutor(len(tokens)) as pool:
        answers = {name: pool.submit(poll, target, token) for name, token in tokens.items()}
        until_waiting(metric_urls, len(tokens))
        yield
        started = time.monotonic()
        for name in tokens:
            say(oz, name, f"hello {name}")
        for name, answer in answers.items():
            resp = answer.result(timeout=30)
            assert resp.status_code == 200, resp.content
            (update,) = resp.json()["result"]
            assert update["message"]["text"] == f"hello {name}"
        assert time.monotonic() - started < 15
    until_waiting(metric_urls, 0)


def test_waiting_long_polls_hold_no_thread_of_the_server(asgi_servers: Any) -> None:
    server: LiveServer = asgi_servers(server="uvicorn")
    ida, oz = Browser(), Browser()
    # Ten: more than the process's database pool (8), of which each waiting poll held one.
    tokens = {f"b{i}_bot": make_bot(ida, f"b{i}_bot")[1] for i in range(10)}
    # One round first: what the process starts once (its Redis subscription, asgiref's
    # helper thread, the database pool's threads) is not what a poll costs.
    warm = {"warm_bot": make_bot(ida, "warm_bot")[1]}
    with polls_waiting_for(server.url, [server.url], warm, oz):
        pass
    before = threads_of(server.process.pid)
    with polls_waiting_for(server.url, [server.url], tokens, oz):
        during = threads_of(server.process.pid)
    # Through the site's middleware stack each waiting poll held a thread (6 polls: +5).
    assert during - before <= 2, (before, during)


def test_the_answers_keep_their_status_body_and_headers(live_asgi: LiveServer) -> None:
    """What the Bot API answered through the site's whole middleware stack, minus only what
    described cookies and languages it never used."""
    ida = Browser()
    _, token = make_bot(ida)
    cases: list[tuple[str | None, str, dict[str, Any]]] = [
        (token, "getMe", {}),
        (None, "getMe", {}),
        (token, "noSuchMethod", {}),
        (token, "getUpdates", {"limit": 0}),
        (token, "getUpdates", {"timeout": 0}),
    ]
    for auth, method, params in cases:
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        live = requests.post(
            f"{live_asgi.url}{BOT_API}{method}", json=params, headers=headers, timeout=10
        )
        stack = bot_call(auth, method, params)  # Django's test client: the full stack
        assert live.status_code == stack.status_code
        assert live.json() == stack.json()
        expected = {k.lower(): v for k, v in stack.headers.items()}
        for gone in ("vary", "content-language"):
            expected.pop(gone)
        got = {k.lower(): v for k, v in live.headers.items()}
        assert got.pop("x-request-id")
        for server_own in ("date", "server"):
            got.pop(server_own, None)
        # django-csp writes its directives in a set's order, which differs between processes.
        csp = "content-security-policy"
        assert set(got.pop(csp).split("; ")) == set(expected.pop(csp).split("; "))
        assert got == expected, method
        assert "set-cookie" not in got
    # A path under the prefix that is no method: the site's own 404 page, as before.
    missing = requests.get(f"{live_asgi.url}{BOT_API}getMe/more", timeout=10)
    assert missing.status_code == 404
    assert missing.text == Client().get(f"{BOT_API}getMe/more").content.decode()


def test_a_long_poll_passes_through_nginx(proxied_servers: Any) -> None:
    """deploy/nginx/comms.conf in front of two uvicorn processes: a waiting poll is woken
    through it, and one that waits the whole MESSAGING_BOT_POLL_MAX_SECONDS (25 s) is not
    cut by nginx's read timeout."""
    stack = proxied_servers()
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    # The stack's processes share one metrics folder: either one's /metrics reports the
    # polls waiting in both (summing the two counted each poll twice).
    metrics = [stack.backends[0].url]
    with polls_waiting_for(stack.url, metrics, {"echo_bot": token}, oz):
        pass
    update_id = bot_call(token, "getUpdates").json()["result"][0]["update_id"]
    started = time.monotonic()
    resp = requests.post(
        f"{stack.url}{BOT_API}getUpdates",
        json={"timeout": 600, "offset": update_id + 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:200]  # nginx's 504 when its timeout is shorter
    assert resp.json() == {"ok": True, "result": []}
    assert time.monotonic() - started >= 24.5
