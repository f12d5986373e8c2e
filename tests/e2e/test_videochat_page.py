"""Video chat page fixes in a real Chromium: on a phone the chat input is on screen during a
match with no scrolling; the partner has one name in the card and in the chat; a translation
shows first with the original on demand; with no translation backend the option says it is
unavailable."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.test_videochat import choose, meet, open_videochat, server, translator  # noqa: F401

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def test_phone_chat_input_in_view_one_partner_name_original_on_demand(  # type: ignore[no-untyped-def]
    server,  # noqa: F811 - the fixture imported above (a LibreTranslate stand-in behind it)
    make_user,
    new_context,
) -> None:
    alice_user = make_user()
    alice_user.profile.nickname = "Alice"
    alice_user.profile.save()
    alice = open_videochat(new_context, server, alice_user, viewport={"width": 1280, "height": 860})
    bob = open_videochat(new_context, server, make_user(), **PHONE)
    choose(alice, language="de", translate_to="")
    choose(bob, language="en", translate_to="en")
    meet(alice, bob)

    # Bob's phone: the input is on screen without scrolling.
    bob.evaluate("() => window.scrollTo(0, 0)")
    box = bob.locator("[data-testid=chat-input]").bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 844, box
    expect(bob.locator("[data-testid=chat-input]")).to_be_enabled()

    alice.fill("[data-testid=chat-input]", "Hallo!")
    alice.click("[data-testid=chat-send]")
    line = bob.locator("[data-testid=chat-line]").last
    expect(line.locator("[data-testid=chat-translation]")).to_have_text("[de>en] Hallo!")
    # One name: the card and the chat agree.
    expect(bob.locator("[data-vc=partner-name]")).to_have_text("Alice")
    expect(line.locator(".vc-who")).to_have_text("Alice")
    # The original on demand.
    original = line.locator(".vc-original")
    expect(original).to_be_hidden()
    line.get_by_test_id("show-original").click()
    expect(original).to_be_visible()
    expect(original).to_have_text("Hallo!")
    box = bob.locator("[data-testid=chat-input]").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844, box
    ARTIFACTS.mkdir(exist_ok=True)
    bob.screenshot(path=str(ARTIFACTS / "videochat-phone-match.png"))


def test_without_a_translation_backend_the_option_says_so(live_asgi, make_user, new_context):  # type: ignore[no-untyped-def]
    page = login(new_context(), live_asgi, make_user())
    page.goto(f"{live_asgi.url}/videochat/")
    expect(page.get_by_test_id("translate-to")).to_be_disabled()
    expect(page.get_by_test_id("translation-unavailable")).to_have_text(
        "Translation is not available on this server."
    )
