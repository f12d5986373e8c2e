"""CallsApp trust, in real Chromium: a contact whose identity changes is flagged in the chat
until acknowledged."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_callsapp import open_callsapp, open_room, send, start_chat
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e


def master_key_of(page: Page, user_id: str) -> str | None:
    """The master key `page`'s device holds for `user_id` (None if it knows no identity)."""
    return page.evaluate(
        "async (u) => (await window.callsapp.identity(u))?.masterKey ?? null", user_id
    )


def evict_and_sign_in_again(page: Page, server, user) -> Page:  # type: ignore[no-untyped-def]
    """The browser drops the site's storage; the page says so; the user logs out and in:
    a new device (the old one is gone with its session)."""
    page.evaluate(
        """async () => {
          window.callsapp.close();
          for (const db of await indexedDB.databases()) indexedDB.deleteDatabase(db.name);
        }"""
    )
    page.reload()
    expect(page.get_by_test_id("callsapp")).to_have_attribute(
        "data-state", "evicted", timeout=30000
    )
    page.get_by_test_id("nav-logout").click()
    context = page.context
    page.close()
    return open_callsapp(context, server, user)


def test_a_contacts_new_identity_is_flagged_in_the_chat_until_acknowledged(live_asgi, new_context):
    ada = UserFactory(profile__nickname="Ada")
    ned = UserFactory(profile__nickname="Ned")
    a = open_callsapp(new_context(), live_asgi, ada)
    n = open_callsapp(new_context(), live_asgi, ned)
    ned_id = n.evaluate("window.callsapp.userId")
    start_chat(a, "ned")
    send(a, "hello Ned")
    open_room(n, "Ada")
    expect(n.locator(".ca-msg.theirs", has_text="hello Ned")).to_be_visible(timeout=20000)
    # Ada's device has seen (and pinned) Ned's identity; nothing to warn about.
    before = master_key_of(a, ned_id)
    assert before
    warning = a.get_by_test_id("key-change")
    expect(warning).to_be_hidden()

    # Ned's only browser loses its storage: signed in again, nothing can vouch for the new
    # device, so it makes a new identity. Ada's open chat with him warns, naming him.
    n = evict_and_sign_in_again(n, live_asgi, ned)
    expect(warning).to_be_visible(timeout=20000)
    expect(warning).to_contain_text("The safety keys of Ned changed")
    after = master_key_of(a, ned_id)
    assert after and after != before

    # Acknowledged: hidden, and it stays hidden after a reload (the new identity is pinned).
    warning.locator("[data-action=ack-keychange]").click()
    expect(warning).to_be_hidden()
    a.reload()
    expect(a.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    open_room(a, "Ned")
    expect(a.get_by_test_id("composer")).to_be_visible()
    expect(a.get_by_test_id("key-change")).to_be_hidden()
    # And the chat goes on with the new device.
    send(a, "welcome back")
    open_room(n, "Ada")
    expect(n.locator(".ca-msg.theirs", has_text="welcome back")).to_be_visible(timeout=20000)
