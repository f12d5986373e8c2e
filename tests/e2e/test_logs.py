"""What the servers log during a browser run holds no content: no message text, no audio, no
key material, no exact location, no password or session. Runs a CBLINE transmission with
shared locations and a video chat with a chat line, through nginx and two uvicorn processes
logging JSON at DEBUG, then greps every log those processes and nginx wrote (and any
other server log of this test run)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import SERVER_LOGS
from tests.e2e import test_videochat as vc
from tests.e2e import test_voice as cb
from tests.factories import UserFactory
from voice.services import channel_create

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHAT_LINE = "Meet me at the old mill, 7pm"
PASSWORD = "correct-horse-battery"  # every factory user's
# Clock times ("04:36:13.450067") can hold a coordinate's digits; they are cut before the grep.
CLOCK = re.compile(r"(?<!\d)\d{2}:\d{2}:\d{2}(\.\d+)?")


def forbidden(cookies: list[str]) -> list[str]:
    coords = [cb.BERLIN, cb.BERLIN_EAST]
    return [
        CHAT_LINE,
        "old mill",
        PASSWORD,
        *(f"{c['latitude']:.4f}"[:6] for c in coords),  # "52.520", "52.510"
        *(f"{c['longitude']:.4f}"[:6] for c in coords),  # "13.405", "13.450"
        *cookies,
        "OpusHead",
        "a=fingerprint",  # SDP: the DTLS key fingerprint
        "BEGIN PRIVATE KEY",
    ]


def test_a_browser_run_leaves_no_content_in_the_logs(proxied_servers, new_context) -> None:  # type: ignore[no-untyped-def]
    stack = proxied_servers({"DJANGO_LOG_JSON": "1", "DJANGO_LOG_LEVEL": "DEBUG"})
    a, b = UserFactory(), UserFactory()
    channel = channel_create(creator=a, name="Mill", range_km=50)
    pa = cb.open_cbline(new_context, stack, a, cb.BERLIN)
    pb = cb.open_cbline(new_context, stack, b, cb.BERLIN_EAST)
    for page in (pa, pb):
        cb.enter(page, channel)
        cb.share_location(page)
    cb.wait(pa, "() => window.cbline.state.members.length === 2")
    pa.get_by_test_id("cb-ptt").hover()
    pa.mouse.down()
    cb.wait(pb, "() => window.cbline.stats.received > 10")
    pa.mouse.up()
    cb.wait(pb, "() => window.cbline.state.talker === null", timeout=10_000)

    alice = vc.open_videochat(new_context, stack, UserFactory())
    bob = vc.open_videochat(new_context, stack, UserFactory())
    vc.press_start(alice)
    vc.wait_state(alice, "waiting")
    vc.press_start(bob)
    for page in (alice, bob):
        vc.wait_state(page, "matched")
    alice.fill("[data-testid=chat-input]", CHAT_LINE)
    alice.click("[data-testid=chat-send]")
    bob.locator("[data-testid=chat-line]").last.wait_for(timeout=10_000)

    cookies = [
        c["value"]
        for page in (pa, pb, alice, bob)
        for c in page.context.cookies()
        if c["name"] in ("sessionid", "csrftoken")
    ]
    for page in (pa, pb, alice, bob):
        page.context.close()  # disconnects logged too

    logs = [*SERVER_LOGS, stack.workdir / "access.log", stack.workdir / "error.log"]
    texts = {str(p): p.read_text(errors="replace") for p in logs if p.exists()}
    ours = [texts[str(p)] for p in stack.logs]
    assert ours and all(ours), "the stack's processes logged nothing"
    for path, text in texts.items():
        unclocked = CLOCK.sub("<time>", text)
        for needle in forbidden(cookies):
            assert needle not in unclocked, f"{needle!r} in {path}"

    # Production format: one JSON object a line, each with its request or connection id.
    records = [json.loads(line) for t in ours for line in t.splitlines() if line.startswith("{")]
    assert records, "no JSON log lines"
    ids = [r for r in records if r.get("request_id") or r.get("connection_id")]
    assert ids, records[:5]
    assert any(r.get("connection_id") for r in records), "no socket line carries its id"
    bad: list[Any] = [r for r in records if not (r.get("event") and r.get("timestamp"))]
    assert not bad, bad[:3]
