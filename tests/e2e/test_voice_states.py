"""CBLINE page states in a real Chromium: one state at a time (the welcome and channel list
before joining, the channel view after), the true connection state, a clear message and a
reset view after leave, kick and ban, and a member out of the talker's range who learns
neither who talks nor gets anything to replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_voice import (
    BERLIN,
    BERLIN_EAST,
    PARIS,
    enter,
    open_cbline,
    share_location,
    wait,
)
from tests.factories import UserFactory
from voice.services import channel_create

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"cbline-{name}.png"), full_page=True)


def test_before_joining_only_the_welcome_and_channel_list_show(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    owner = UserFactory()
    channel = channel_create(creator=owner, name="Harbour")
    page = open_cbline(new_context, live_asgi, owner)
    expect(page.get_by_test_id(f"cb-channel-{channel.pk}")).to_be_visible()
    expect(page.locator("[data-cb-empty]")).to_be_visible()
    for hidden in ("cb-leave", "cb-ptt", "cb-status", "cb-location", "cb-members"):
        expect(page.get_by_test_id(hidden)).to_be_hidden()
    # The connection state is the true one: open, so no "Reconnecting…" anywhere.
    expect(page.get_by_test_id("cb-conn")).to_have_text("Connected")
    assert "Reconnecting" not in page.inner_text("body")
    shot(page, "pre-join-desktop")

    enter(page, channel)
    expect(page.locator("[data-cb-empty]")).to_be_hidden()
    expect(page.get_by_test_id("cb-ptt")).to_be_enabled()
    expect(page.get_by_test_id("cb-status")).to_have_text("Channel is quiet")
    assert page.errors == []


def test_leave_kick_and_ban_each_say_so_and_reset_the_view(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    owner, member = UserFactory(), UserFactory()
    channel = channel_create(creator=owner, name="Dispatch")
    po = open_cbline(new_context, live_asgi, owner)
    pm = open_cbline(new_context, live_asgi, member)
    po.on("dialog", lambda d: d.accept())  # "Kick X?" / "Ban X?"
    enter(po, channel)

    def left_with(text: str) -> None:
        notice = pm.get_by_test_id("cb-notice")
        expect(notice).to_contain_text(text)
        expect(pm.locator("[data-cb-channel]")).to_be_hidden()
        expect(pm.get_by_test_id("cb-ptt")).to_be_hidden()
        assert "(you)" not in pm.inner_text("body")
        assert pm.get_by_test_id("cb-members").inner_html() == ""
        assert pm.evaluate("() => window.cbline.state.channelId") is None

    # Leave.
    enter(pm, channel)
    pm.get_by_test_id("cb-leave").click()
    left_with("You left Dispatch.")
    shot(pm, "after-leave")

    # Kick: the member may come back.
    enter(pm, channel)
    wait(po, "() => window.cbline.state.members.length === 2")
    row = po.locator(f"[data-testid=cb-members] li[data-user-id='{member.pk}']")
    row.get_by_role("button", name="Kick").click()
    left_with("A moderator removed you from Dispatch")
    shot(pm, "after-kick")

    # Ban: the view resets, and joining again is refused with the reason.
    enter(pm, channel)
    wait(po, "() => window.cbline.state.members.length === 2")
    po.get_by_test_id("cb-mod-minutes").select_option("1440")  # a day, not forever
    row.get_by_role("button", name="Ban").click()
    left_with("A moderator banned you from Dispatch until")
    shot(pm, "after-ban")
    pm.get_by_test_id(f"cb-channel-{channel.pk}").click()
    expect(pm.locator("[data-cb-toast]")).to_contain_text("banned")
    assert pm.evaluate("() => window.cbline.state.channelId") is None

    # The moderator's ban list shows it with its end, and lifts it.
    banned = po.get_by_test_id("cb-bans").locator(f"li[data-user-id='{member.pk}']")
    expect(banned).to_contain_text("until")
    shot(po, "ban-list")
    banned.get_by_role("button", name="Unban").click()
    expect(po.get_by_test_id("cb-bans")).to_have_text("Nobody is banned.")
    enter(pm, channel)
    for page in (po, pm):
        assert page.errors == []


def test_a_member_out_of_range_learns_nothing_of_the_transmission(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    talker, near, far = UserFactory(), UserFactory(), UserFactory()
    channel = channel_create(creator=talker, name="Convoy", range_km=50)
    pt = open_cbline(new_context, live_asgi, talker, BERLIN)
    pn = open_cbline(new_context, live_asgi, near, BERLIN_EAST)
    pf = open_cbline(new_context, live_asgi, far, PARIS)
    for page in (pt, pn, pf):
        enter(page, channel)
        share_location(page)
    wait(pt, "() => window.cbline.state.members.length === 3")

    pt.get_by_test_id("cb-ptt").hover()
    pt.mouse.down()
    wait(pn, "() => window.cbline.stats.received > 10")
    wait(pf, "() => window.cbline.state.talker !== null")
    status = pf.get_by_test_id("cb-status").inner_text()
    assert status == "Someone out of your range is talking"
    assert talker.profile.nickname not in pf.inner_text("body").replace(
        pf.get_by_test_id("cb-members").inner_text(), ""
    )
    expect(pf.get_by_test_id("cb-ptt")).to_have_attribute("data-state", "busy")
    expect(pn.get_by_test_id("cb-status")).to_contain_text(f"{talker.profile.nickname} is talking")
    shot(pf, "out-of-range-during")
    pt.mouse.up()

    wait(pn, "() => window.cbline.state.talker === null")
    wait(pf, "() => window.cbline.state.talker === null")
    # The near member can play it back; the far one has nothing listed, nothing to fetch.
    expect(pn.get_by_test_id("cb-replays").get_by_role("button", name="Play")).to_be_visible()
    expect(pf.get_by_test_id("cb-replays")).to_have_text("Nothing received yet.")
    assert pf.evaluate("() => window.cbline.stats.received") == 0
    shot(pf, "out-of-range-after")
    for page in (pt, pn, pf):
        assert page.errors == []


def test_fetch_is_offered_only_to_those_allowed_to_fetch(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    talker, listener, late = UserFactory(), UserFactory(), UserFactory()
    channel = channel_create(creator=talker, name="Relay")
    pt = open_cbline(new_context, live_asgi, talker)
    pl = open_cbline(new_context, live_asgi, listener)
    for page in (pt, pl):
        enter(page, channel)
    wait(pt, "() => window.cbline.state.members.length === 2")
    pt.get_by_test_id("cb-ptt").hover()
    pt.mouse.down()
    wait(pl, "() => window.cbline.stats.received > 10")
    pt.mouse.up()
    wait(pl, "() => window.cbline.state.talker === null")

    # The listener reloads (its page memory is gone): the server offers the transmission.
    pl.reload()
    wait(pl, "() => window.cbline && window.cbline.state.open")
    enter(pl, channel)
    fetch = pl.get_by_test_id("cb-replays").get_by_role("button", name="Fetch")
    expect(fetch).to_be_visible()
    fetch.click()
    expect(pl.get_by_test_id("cb-replays").get_by_role("button", name="Play")).to_be_visible()
    assert pl.locator("[data-cb-toast]").is_hidden()  # no "you were not a listener"

    # Someone who joins afterwards was no listener: nothing offered, nothing refused.
    pz = open_cbline(new_context, live_asgi, late)
    enter(pz, channel)
    expect(pz.get_by_test_id("cb-replays")).to_have_text("Nothing received yet.")
    assert pz.get_by_test_id("cb-replays").get_by_role("button").count() == 0
    for page in (pt, pl, pz):
        assert page.errors == []
