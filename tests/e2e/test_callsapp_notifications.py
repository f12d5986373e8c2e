"""CallsApp's desktop notifications in real Chromium: none while the page is in front (the
unread counts say it), one when the user is in another tab, saying what the device's level
allows (name and message, or neither), and a click opening the chat. The browser's own
Notification is recorded on its way (it still shows)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_callsapp import open_callsapp, send, start_chat
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

# The page's Notification, recorded: what it asked the system to show.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__shown = [];
  window.Notification = class extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__shown.push({ title, body: options.body, tag: options.tag });
      window.__last = this;
    }
  };
})();
"""


def go_away(page: Page) -> None:
    """The user switches to another tab: this page loses the focus (Playwright otherwise
    keeps every page focused)."""
    page.context.new_cdp_session(page).send(
        "Emulation.setFocusEmulationEnabled", {"enabled": False}
    )
    page.bring_to_front()  # then away from it: a click of the test's may have focused it
    other = page.context.new_page()
    other.goto("about:blank")
    other.bring_to_front()
    assert page.evaluate("document.hasFocus()") is False


def shown(page: Page, count: int) -> list[dict[str, str]]:
    page.wait_for_function("(n) => window.__shown.length >= n", arg=count, timeout=20000)
    return page.evaluate("window.__shown")


def test_a_message_for_a_page_not_in_front_notifies_at_the_devices_level(live_asgi, new_context):
    ida = UserFactory(profile__nickname="Ida")
    oz = UserFactory(profile__nickname="Oz")
    octx = new_context(permissions=["notifications"])
    octx.add_init_script(RECORD_NOTIFICATIONS)
    o = open_callsapp(octx, live_asgi, oz)
    i = open_callsapp(new_context(), live_asgi, ida)

    # In front: the chat list counts it, and the tab's title; no notification.
    start_chat(i, "oz")
    send(i, "hello")
    expect(o.get_by_test_id("unread")).to_have_text("1", timeout=20000)
    expect(o).to_have_title("(1) CallsApp")
    assert o.evaluate("window.__shown") == []

    # Name and message (the default), once Oz is in another tab.
    o.get_by_test_id("open-devices").click()
    expect(o.get_by_test_id("notifications-level")).to_have_value("message")
    expect(o.get_by_test_id("notifications-hint")).to_be_hidden()
    go_away(o)
    send(i, "are you there?")
    room_id = i.evaluate("window.callsapp.openRoom")
    assert shown(o, 1) == [{"title": "Ida", "body": "are you there?", "tag": room_id}]
    expect(o).to_have_title("(2) CallsApp")

    # Neither name nor message: what a locked screen may show.
    o.get_by_test_id("notifications-level").select_option("hidden")
    send(i, "the secret plans")
    last = shown(o, 2)[-1]
    assert last == {"title": "CallsApp", "body": "New message", "tag": room_id}
    assert o.evaluate("localStorage.getItem('callsapp.notifications')") == "hidden"

    # A click opens the chat it is about, and its messages count as read.
    o.evaluate("window.__last.onclick()")
    expect(o.get_by_test_id("room-name")).to_have_text("Ida")
    expect(o.locator(".ca-msg.theirs", has_text="the secret plans")).to_be_visible()

    # Muted for an hour: the chat list says so, and a message in it notifies no more.
    o.get_by_test_id("open-manage").click()
    o.get_by_test_id("mute").select_option(str(3600 * 1000))
    expect(o.get_by_test_id("mute-state")).to_contain_text("Muted until")
    o.get_by_test_id("manage-panel").locator("[data-action=close-panel]").click()
    expect(o.get_by_test_id("room-list").get_by_test_id("muted")).to_be_visible()
    go_away(o)
    send(i, "quiet please")
    expect(o.locator(".ca-msg.theirs", has_text="quiet please")).to_be_visible(timeout=20000)
    assert len(o.evaluate("window.__shown")) == 2
