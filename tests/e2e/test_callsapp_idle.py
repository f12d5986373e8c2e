"""CallsApp's page at rest: an open chat with messages arriving must not hammer the server
(each page used to post keys/upload and ask a contact's presence several times a second)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Request, expect

from messaging.models import OneTimeKey
from tests.e2e.test_callsapp import chatting, device_of, send

pytestmark = pytest.mark.e2e

MESSAGES = 8


def test_an_open_chat_with_messages_arriving_asks_little_of_the_server(live_asgi, new_context):
    p, r, _, _ = chatting(live_asgi, new_context, "Pia", "Rex", "hello")
    # Rex's page settles first (its keys uploaded, the chat drawn); then count what it asks.
    expect(r.get_by_test_id("room-name")).to_have_text("Pia")
    rex_device = device_of(r)
    keys_before = OneTimeKey.objects.filter(device=rex_device).count()
    asked: list[str] = []

    def note(request: Request) -> None:
        if "/keys/upload" in request.url:
            asked.append("upload")
        elif "/presence/" in request.url:
            asked.append("presence")

    r.on("request", note)
    for n in range(MESSAGES):
        send(p, f"message {n}")
        expect(r.locator(".ca-msg.theirs", has_text=f"message {n}")).to_be_visible(timeout=20000)
    r.remove_listener("request", note)

    uploads = asked.count("upload")
    presence = len(asked) - uploads
    # Nothing claimed Rex's keys meanwhile: no upload is due; presence at most once or twice.
    assert uploads == 0, f"{uploads} keys/upload and {presence} presence requests: {asked}"
    assert presence <= 2, f"{presence} presence requests while {MESSAGES} messages came"
    # The server keeps the machine's 50 one-time keys for his device, not a batch per frame.
    assert keys_before <= 100, f"{keys_before} one-time keys stored for one device"
    assert OneTimeKey.objects.filter(device=rex_device).count() == keys_before
