"""Sentry: on only when SENTRY_DSN is set; an error report reaches the DSN's server with
nothing personal (cookies, body, query string, email, IP, local values)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import sentry_sdk
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from config.sentry import init_sentry
from tests.conftest import ROOT, session_cookie_for
from tests.factories import UserFactory

# Built, so that the source lines Sentry sends around a frame never contain them.
SECRET_EMAIL = "-".join(["pat", "private"]) + "@example.com"
PASSWORD = "-".join(["hunter2", "secret"])


def exploding_view(request: HttpRequest) -> HttpResponse:
    password = request.POST.get("password")  # a local variable Sentry must not send
    raise RuntimeError(f"boom {len(password or '')}")


urlpatterns = [path("explode/", exploding_view)]


class Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        elif self.headers.get("Content-Encoding") == "deflate":
            body = zlib.decompress(body)
        Collector.received.append(body)
        Collector.arrived.set()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sentry_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Collector.received = []
    Collector.arrived.clear()
    yield f"http://publickey@127.0.0.1:{server.server_port}/1"
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # inactive again for the rest of the run
    server.shutdown()


@pytest.mark.django_db
def test_an_error_is_reported_without_personal_data(sentry_server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROOT_URLCONF = __name__
    init_sentry(dsn=sentry_server, environment="test")
    user = UserFactory(email=SECRET_EMAIL)
    client = Client(raise_request_exception=False, REMOTE_ADDR="203.0.113.77")
    client.cookies[settings.SESSION_COOKIE_NAME] = session_cookie_for(user)
    resp = client.post(
        "/explode/?near=sekret-query",
        {"password": PASSWORD, "message": "meet me at 52.52,13.40"},
        HTTP_AUTHORIZATION="Bearer sekret-header",
        HTTP_X_CLIENT_NOTE="sekret-note",
    )
    assert resp.status_code == 500
    sentry_sdk.flush(timeout=10)
    assert Collector.arrived.wait(10)
    payload = b"\n".join(Collector.received).decode()
    events = [json.loads(line) for line in payload.splitlines() if '"exception"' in line]
    assert events, payload[:500]
    event = events[0]
    assert event["exception"]["values"][0]["value"].startswith("boom")
    assert set(event.get("user", {})) <= {"id"}  # at most a pseudonymous id
    for leaked in (
        SECRET_EMAIL,
        PASSWORD,
        "52.52",
        "sekret-query",
        "sekret-header",
        "sekret-note",
        "203.0.113.77",
        settings.SESSION_COOKIE_NAME + "=",
    ):
        assert leaked not in payload, leaked


@pytest.mark.parametrize(("dsn", "active"), [("", "False"), ("http://k@127.0.0.1:9/1", "True")])
def test_sentry_is_on_only_with_a_dsn(dsn: str, active: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.test", SENTRY_DSN=dsn)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); import sentry_sdk; "
            "print(sentry_sdk.get_client().is_active())",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1] == active
