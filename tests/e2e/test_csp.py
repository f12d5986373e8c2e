"""The Content Security Policy in a real browser: what the e2e fixtures count as a failure
is really caught (an injected inline script and style are blocked and reported), and every
page a person visits loads with no violation at all."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import login, watch_csp
from tests.factories import UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def test_inline_script_and_style_are_blocked_and_reported(live_asgi, browser) -> None:  # type: ignore[no-untyped-def]
    violations: list[str] = []
    context = browser.new_context()
    try:
        watch_csp(context, violations)
        page = context.new_page()
        page.goto(f"{live_asgi.url}/accounts/login/")
        page.evaluate(
            """() => {
              const s = document.createElement("script");
              s.textContent = "window.__inlineRan = true";
              document.body.append(s);
              const d = document.createElement("div");
              d.setAttribute("style", "color: red");
              d.id = "styled";
              document.body.append(d);
            }"""
        )
        page.wait_for_function("() => (window.__csp || []).length >= 2", polling=50)
        assert page.evaluate("() => window.__inlineRan === undefined")
        assert page.evaluate("() => getComputedStyle(styled).color") != "rgb(255, 0, 0)"
        # The binding's calls reach the test in order, before the evaluate below returns.
        page.evaluate("() => 0")
        assert any("script-src" in v for v in violations), violations
        assert any("style-src" in v for v in violations), violations
    finally:
        context.close()


PAGES = [
    "/",
    "/profile/",
    "/devices/",
    "/cbline/",
    "/videochat/",
    "/messaging/",
    "/accounts/password/change/",
    "/accounts/email/",
]


def test_every_page_loads_without_a_violation(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    for anonymous_path in (
        "/",
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/password/reset/",
    ):
        page = new_context().new_page()
        page.goto(f"{live_asgi.url}{anonymous_path}")
        page.wait_for_load_state("networkidle")
    user = UserFactory()
    page = login(new_context(permissions=["camera", "microphone"]), live_asgi, user)
    for path in PAGES:
        resp = page.goto(f"{live_asgi.url}{path}")
        assert resp is not None and resp.status < 400, (path, resp and resp.status)
        page.wait_for_load_state("networkidle")
    # new_context's teardown fails the test on any violation.
