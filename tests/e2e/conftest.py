"""Browser tests: Debian's Chromium driven by Playwright against a live daphne process."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    # Playwright's sync API runs an event loop in the test's thread from here on, so Django
    # would refuse the tests' own synchronous ORM calls. Browser tests run last (see
    # tests/conftest.py), so consumer tests, which rely on Django's check to catch ORM calls
    # made from async code, never run with this exemption.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


# Every Content Security Policy violation in a page, reported to the test through a binding
# (the page's own code cannot see or stop it); workers' violations show in the console.
# An `eval` with no source file is Playwright's own evaluation machinery (seen once under
# load, when a wait_for_function retried), not the page's code: not counted.
CSP_SPY = """document.addEventListener("securitypolicyviolation", (e) => {
  if (e.blockedURI === "eval" && !e.sourceFile) return;
  const text = `${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`;
  (window.__csp = window.__csp || []).push(text);
  window.__cspViolation(text);
});"""


def watch_csp(context, violations: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Append every CSP violation in `context`'s pages and workers to `violations`."""

    def on_console(msg) -> None:  # type: ignore[no-untyped-def]
        harness_eval = "evaluate a string" in msg.text and not msg.location.get("url")
        if "Content Security Policy" in msg.text and not harness_eval:
            violations.append(msg.text)

    context.expose_binding("__cspViolation", lambda source, text: violations.append(text))
    context.add_init_script(CSP_SPY)
    context.on("console", on_console)


@pytest.fixture
def new_context(browser) -> Iterator:  # type: ignore[no-untyped-def]
    """Factory of isolated browser contexts (one per simulated person). A test fails if any
    page it opened violated the Content Security Policy."""
    contexts = []
    violations: list[str] = []

    def make(**kwargs):  # type: ignore[no-untyped-def]
        ctx = browser.new_context(**kwargs)
        watch_csp(ctx, violations)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()
    assert not violations, "Content Security Policy violations:\n" + "\n".join(violations)


def login(context, server, user, password: str = "correct-horse-battery"):  # type: ignore[no-untyped-def]
    """Log `user` in through the real login form; returns the page."""
    page = context.new_page()
    page.goto(f"{server.url}/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def server_log(server, tail: int = 8000) -> str:  # type: ignore[no-untyped-def]
    """The end of what a live server process wrote (tests/conftest.py sends its output to
    var/server-<port>.log), for a failure's message beside what the pages said: without
    daphne's own access lines and successful reads (pages read media, history and presence
    often), so that writes, warnings and errors fit."""
    from tests.conftest import ROOT

    path = ROOT / "var" / f"server-{server.port}.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    kept = [
        line for line in lines if not _DAPHNE_ACCESS.match(line) and not _QUIET_READ.search(line)
    ]
    return "\n".join(kept)[-tail:]


_DAPHNE_ACCESS = re.compile(r"^[0-9.]+:[0-9]+ - - \[")
_QUIET_READ = re.compile(r"\[comms\.access\] method=GET .* status=[23]")


def off_loop(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run `fn` in a worker thread: services that emit real-time events (async_to_sync)
    cannot run in the thread where Playwright's event loop is running."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def call():  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def wait_for(
    predicate: Callable[[], object], page: Any, what: str, timeout_ms: int = 15000
) -> None:
    """Poll a server-side condition (the database, Redis) with a deadline. Between polls the
    page keeps running: Playwright's sync API only serves it while we are in one of its
    calls, hence its wait rather than a sleep."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(100)
