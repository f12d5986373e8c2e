"""CallsApp 1:1 calls in real Chromium with fake camera and microphone: a video call rings,
is answered and carries media browser to browser while the server relays only Megolm
ciphertext (no SDP, no address candidate, no m.call.* type in the clear); both chats log it
with its length. A declined call, and a call to someone already in a call (busy), are said
and logged as such."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image
from playwright.sync_api import Page, expect

from messaging.models import RoomEvent
from tests.conftest import ROOT
from tests.e2e.test_callsapp import chatting, open_callsapp, open_room, send, start_chat
from tests.factories import UserFactory
from tests.messaging.scan import plaintext_found

pytestmark = pytest.mark.e2e

REMOTE_VIDEO_PLAYS = "() => document.querySelector('[data-testid=remote-video]').videoWidth > 0"


def connected(*pages: Page) -> None:
    for page in pages:
        expect(page.get_by_test_id("call")).to_have_attribute(
            "data-state", "connected", timeout=30000
        )


def ringing(page: Page, caller: str, kind: str) -> None:
    expect(page.get_by_test_id("call")).to_have_attribute("data-state", "ringing", timeout=20000)
    expect(page.get_by_test_id("call-peer")).to_have_text(caller)
    expect(page.get_by_test_id("call-status")).to_have_text(f"Incoming {kind} call")


def test_a_video_call_connects_browser_to_browser_through_ciphertext_and_is_logged(
    live_asgi, new_context
):
    i, o, _, _ = chatting(live_asgi, new_context, "Ida", "Oz", "can I call you?")
    i.get_by_test_id("call-video").click()
    expect(i.get_by_test_id("call-status")).to_have_text("Ringing…", timeout=20000)
    ringing(o, "Ida", "video")
    o.get_by_test_id("call-accept").click()
    connected(i, o)
    for page in (i, o):
        page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
        expect(page.get_by_test_id("call-status")).to_have_text(re.compile(r"^0:\d\d$"))
    o.screenshot(path=str(ROOT / "var" / "e2e-callsapp-call.png"))

    # Signalling went as room events the server cannot read: no call type in the clear, and
    # no SDP or candidate anywhere it keeps anything, nor in its log.
    types = set(RoomEvent.objects.filter(state_key__isnull=True).values_list("type", flat=True))
    assert types == {"m.room.encrypted"}, types
    sdp = i.evaluate("() => window.callsapp.calls.call.connection.pc.localDescription.sdp")
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # type: ignore[union-attr]
    needles = [f"a=ice-ufrag:{ufrag}", "m.call.invite", "m.call.candidates"]
    assert plaintext_found(needles) == []
    log = (ROOT / "var" / f"server-{live_asgi.port}.log").read_text(errors="replace")
    assert not any(n in log for n in needles)

    # Muting stops the microphone track; the call goes on.
    o.get_by_test_id("call-mute").click()
    expect(o.get_by_test_id("call-mute")).to_have_attribute("aria-pressed", "true")
    assert o.evaluate(
        "() => window.callsapp.calls.call.localStream.getAudioTracks().every((t) => !t.enabled)"
    )

    i.get_by_test_id("call-hangup").click()
    for page in (i, o):
        expect(page.get_by_test_id("call")).to_have_attribute("data-state", "ended", timeout=20000)
        expect(page.get_by_test_id("call")).to_be_hidden(timeout=10000)
    expect(i.get_by_test_id("call-log")).to_have_text(
        re.compile(r"^Outgoing video call · 0:\d\d · "), timeout=20000
    )
    expect(o.get_by_test_id("call-log")).to_have_text(
        re.compile(r"^Incoming video call · 0:\d\d · "), timeout=20000
    )
    # A call log line cannot be deleted, as the policy says of call lengths and missed calls.
    expect(i.get_by_test_id("call-log").get_by_test_id("redact")).to_have_count(0)


def test_a_declined_call_and_a_busy_callee_are_said_and_logged(live_asgi, new_context):
    i, o, _, _ = chatting(live_asgi, new_context, "Ida", "Oz", "are you free?")
    pia_user = UserFactory(profile__nickname="Pia")
    # Pia has a profile photo: the people she talks with see it (the policy's "name and photo").
    photo = Path(settings.MEDIA_ROOT) / "profiles" / "2026" / "12" / "pia.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 60, 120)).save(photo)
    pia_user.profile.photo = "profiles/2026/12/pia.png"
    pia_user.profile.save(update_fields=["photo"])
    pia = open_callsapp(new_context(), live_asgi, pia_user)
    start_chat(pia, "oz")
    send(pia, "me too")

    # Oz declines Ida's voice call.
    i.get_by_test_id("call-audio").click()
    ringing(o, "Ida", "voice")
    o.get_by_test_id("call-hangup").click()  # "Decline" while it rings
    expect(i.get_by_test_id("call-status")).to_have_text("Declined", timeout=20000)
    expect(i.get_by_test_id("call-log")).to_have_text(
        re.compile(r"^Outgoing voice call · declined · "), timeout=20000
    )
    expect(o.get_by_test_id("call-log")).to_have_text(re.compile(r"^Declined voice call · "))

    # Ida calls again and Oz takes it; Pia's call meanwhile finds him busy, and his call with
    # Ida goes on.
    expect(i.get_by_test_id("call")).to_be_hidden(timeout=10000)
    i.get_by_test_id("call-audio").click()
    ringing(o, "Ida", "voice")
    o.get_by_test_id("call-accept").click()
    connected(i, o)
    pia_face = o.get_by_test_id("room-list").locator("li", has_text="Pia").get_by_test_id("avatar")
    expect(pia_face).to_have_attribute("src", f"{settings.MEDIA_URL}profiles/2026/12/pia.png")
    o.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 64", arg=pia_face.element_handle()
    )
    pia.get_by_test_id("call-audio").click()
    expect(pia.get_by_test_id("call-status")).to_have_text("Busy: on another call", timeout=20000)
    expect(pia.get_by_test_id("call-log")).to_have_text(
        re.compile(r"^Outgoing voice call · busy on another call · "), timeout=20000
    )
    expect(o.get_by_test_id("call")).to_have_attribute("data-state", "connected")
    # The call shrinks to a bar, and the chats are usable below it while it goes on.
    o.get_by_test_id("call-minimize").click()
    open_room(o, "Pia")
    expect(o.get_by_test_id("room-name")).to_have_text("Pia")
    expect(o.get_by_test_id("call-log")).to_have_text(re.compile(r"^Missed voice call · "))
    o.get_by_test_id("call-hangup").click()
    expect(i.get_by_test_id("call")).to_have_attribute("data-state", "ended", timeout=20000)
