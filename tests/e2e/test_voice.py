"""CBLINE in real Chromium pages against a live server (daphne alone, whose audio goes through
ASGI send; and nginx in front of two uvicorn processes, whose audio the relay writes straight
to the sockets): A holds the big button with the fake microphone and B's page plays it; C
(another channel) and D (out of range) get nothing; busy while someone talks; the listener's
page keeps no voice in browser storage."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import login
from tests.factories import UserFactory
from tests.nginx_stack import scrape
from voice.services import channel_create

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

BERLIN = {"latitude": 52.5200, "longitude": 13.4050}
BERLIN_EAST = {"latitude": 52.5100, "longitude": 13.4500}  # ~3 km away
PARIS = {"latitude": 48.8566, "longitude": 2.3522}  # ~880 km away

# Every attempt to persist anything, recorded from before the page's modules load.
STORAGE_SPY = """(() => {
  window.__writes = [];
  const note = (what) => window.__writes.push(what);
  const setItem = Storage.prototype.setItem;
  Storage.prototype.setItem = function (k, v) {
    note(`${this === window.localStorage ? "local" : "session"}:${k}`);
    return setItem.call(this, k, v);
  };
  const open = IDBFactory.prototype.open;
  IDBFactory.prototype.open = function (...a) {
    note("indexedDB.open");
    return open.apply(this, a);
  };
  if (self.CacheStorage) {
    const copen = CacheStorage.prototype.open;
    CacheStorage.prototype.open = function (...a) {
      note("caches.open");
      return copen.apply(this, a);
    };
  }
})()"""


def open_cbline(
    new_context: Any,
    server: Any,
    user: Any,
    geolocation: dict | None = None,
    init_script: str = "",
) -> Any:
    kwargs: dict[str, Any] = {"permissions": ["microphone"]}
    if geolocation:
        kwargs.update(geolocation=geolocation, permissions=["microphone", "geolocation"])
    context = new_context(**kwargs)
    context.add_init_script(STORAGE_SPY)
    if init_script:
        context.add_init_script(init_script)
    page = login(context, server, user)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{server.url}/cbline/")
    wait(page, "() => window.cbline && window.cbline.state.open")
    return page


def wait(page: Any, expression: str, timeout: float = 30_000, *, also: Any = ()) -> None:
    """Wait until the page's `expression` holds; on a timeout, fail with what the page (and
    the pages in `also`) showed, so a failure on a busy machine says which side stalled."""
    try:
        # Poll on a timer: the default (animation frames) stalls in pages that are not in front.
        page.wait_for_function(expression, polling=100, timeout=timeout)
    except PlaywrightTimeout as exc:
        seen = [snapshot(p) for p in (page, *also)]
        raise AssertionError(
            f"not true after {timeout / 1000:g} s: {expression}; pages: {seen}"
        ) from exc


def snapshot(page: Any) -> Any:
    return page.evaluate(
        "() => window.cbline ? { state: window.cbline.state, stats: window.cbline.stats } : null"
    )


def enter(page: Any, channel: Any) -> None:
    page.get_by_test_id(f"cb-channel-{channel.pk}").click()
    wait(page, f"() => window.cbline.state.channelId === {channel.pk}")


def share_location(page: Any) -> None:
    page.get_by_test_id("cb-location").check()
    wait(page, "() => window.cbline.state.hasLocation")


def stats(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.cbline.stats")


@pytest.fixture(params=["daphne", "nginx"])
def voice_server(request, asgi_servers, proxied_servers):  # type: ignore[no-untyped-def]
    """daphne alone (`make run`), and production's path: nginx in front of two uvicorn
    processes, whose relay writes audio straight to the sockets."""
    if request.param == "nginx":
        return proxied_servers()
    return asgi_servers(server=request.param)


def test_push_to_talk_heard_in_range_only(voice_server, new_context) -> None:  # type: ignore[no-untyped-def]
    live_asgi = voice_server
    a, b, c, d = (UserFactory() for _ in range(4))
    main = channel_create(creator=a, name="Highway", range_km=50, description="convoy")
    other = channel_create(creator=c, name="Elsewhere")

    pa = open_cbline(new_context, live_asgi, a, BERLIN)
    pb = open_cbline(new_context, live_asgi, b, BERLIN_EAST)
    pc = open_cbline(new_context, live_asgi, c)
    pd = open_cbline(new_context, live_asgi, d, PARIS)
    for page in (pa, pb, pd):
        enter(page, main)
        share_location(page)
    enter(pc, other)
    assert "50 km" in pb.get_by_test_id("cb-range").inner_text()
    wait(pa, "() => window.cbline.state.members.length === 3")

    # Members see each other's nickname and country flag, never coordinates.
    members = pb.get_by_test_id("cb-members").inner_text()
    assert a.profile.nickname in members and "Germany" in members
    assert "52.5" not in pb.content() and "13.4" not in pb.content()

    # A holds the big button (mouse) while the fake microphone beeps.
    ptt = pa.get_by_test_id("cb-ptt")
    ptt.hover()
    pa.mouse.down()
    wait(pa, "() => window.cbline.state.talking")
    wait(pb, "() => window.cbline.state.talker !== null")
    assert a.profile.nickname in pb.get_by_test_id("cb-status").inner_text()

    # B presses meanwhile (space bar): busy.
    pb.keyboard.press("Space")  # focus is still on the location switch: Space must talk
    wait(pb, "() => window.cbline.stats.busy >= 1")
    assert pb.get_by_test_id("cb-ptt").get_attribute("data-state") in ("busy", "listening")

    # Held until B's page has decoded and played non-silent audio (the fake microphone
    # beeps now and then: a fixed hold may hold only silence).
    wait(
        pb,
        "() => window.cbline.stats.nonSilentSamples > 0 && window.cbline.stats.decodedFrames > 20",
        timeout=30_000,  # a loaded machine's audio thread plays it late
        also=[pa],
    )
    pa.mouse.up()
    wait(pb, "() => window.cbline.state.talker === null", timeout=10_000, also=[pa])
    assert stats(pa)["sent"] > 20
    heard = stats(pb)
    assert heard["received"] > 20 and heard["decodeErrors"] == 0
    assert heard["replayStored"] == 1
    assert pb.get_by_test_id("cb-location").is_checked()  # Space did not toggle it
    pb.get_by_test_id("cb-replays").get_by_role("button", name="Play").click()

    # C (other channel) and D (880 km away, range 50 km) got nothing.
    for page in (pc, pd):
        got = stats(page)
        assert got["received"] == 0 and got["nonSilentSamples"] == 0, got
    assert pd.evaluate("() => window.cbline.state.talker") is None  # saw the end too

    # The listener's page kept the voice in memory only.
    stored = pb.evaluate(
        """async () => ({
        writes: window.__writes,
        local: Object.keys(localStorage),
        idb: (await indexedDB.databases()).map((d) => d.name),
        caches: await caches.keys(),
    })"""
    )
    # Nothing in localStorage at all (the device is the server's, bound to the session); the
    # only sessionStorage key is site.js's note that the device was described.
    assert stored["local"] == []
    assert not [w for w in stored["writes"] if not w.startswith("session:cp.device_described.")]
    assert stored["idb"] == [] and stored["caches"] == []
    for page in (pa, pb, pc, pd):
        assert page.errors == []

    if hasattr(live_asgi, "backends"):  # through nginx: what operators saw of it
        seen = scrape(live_asgi)
        assert seen['cbline_floor_requests_total{outcome="granted"}'] >= 1
        assert seen["cbline_floor_grant_seconds_count"] >= 1
        assert seen["cbline_packets_relayed_total"] >= heard["received"]
        assert seen["cbline_relay_lag_seconds_count"] >= stats(pa)["sent"]
        assert seen['comms_websocket_connections{product="voice"}'] == 4


def test_protected_channel_create_and_join_with_password(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    owner, guest = UserFactory(), UserFactory()
    po = open_cbline(new_context, live_asgi, owner)
    po.get_by_test_id("cb-create-toggle").click()
    po.get_by_test_id("cb-new-name").fill("Secret Garden")
    po.locator("#cb-new-password").fill("tulips-77")
    po.get_by_test_id("cb-create-submit").click()
    wait(po, "() => window.cbline.state.channelId !== null")
    assert po.get_by_test_id("cb-channel-name").inner_text().startswith("Secret Garden")

    pg = open_cbline(new_context, live_asgi, guest)
    pg.get_by_test_id("cb-search").fill("garden")
    item = pg.locator("[data-channel-id]").filter(has_text="Secret Garden")
    item.click()
    pg.get_by_test_id("cb-password").fill("wrong")
    pg.get_by_test_id("cb-password-submit").click()
    wait(
        pg, "() => document.querySelector('[data-cb-password-error]').textContent.includes('Wrong')"
    )
    pg.get_by_test_id("cb-password").fill("tulips-77")
    pg.get_by_test_id("cb-password-submit").click()
    wait(pg, "() => window.cbline.state.channelId !== null")
    wait(po, "() => window.cbline.state.members.length === 2")

    # Renaming from the page reaches the other member.
    pg.locator("[data-cb-identity-edit]").click()
    pg.get_by_test_id("cb-nickname").fill("Gardener")
    pg.locator("[data-cb-identity] button[type=submit]").click()
    wait(
        po,
        "() => document.querySelector('[data-testid=cb-members]').textContent.includes('Gardener')",
    )
    for page in (po, pg):
        assert page.errors == []


def test_moderator_mutes_and_unmutes_a_member(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    owner, member = UserFactory(), UserFactory()
    channel = channel_create(creator=owner, name="Dispatch")
    po = open_cbline(new_context, live_asgi, owner)
    pm = open_cbline(new_context, live_asgi, member)
    enter(po, channel)
    enter(pm, channel)
    wait(po, "() => window.cbline.state.members.length === 2")
    row = po.locator(f"[data-testid=cb-members] li[data-user-id='{member.pk}']")
    toast = "document.querySelector('[data-cb-toast]').textContent"

    row.get_by_role("button", name="Mute").click()
    wait(pm, f"() => {toast}.includes('muted you')")
    row.locator(".cb-tag.muted").wait_for()
    # Pressing while muted is refused by the server, and the page says why.
    pm.get_by_test_id("cb-ptt").hover()
    pm.mouse.down()
    wait(pm, f"() => {toast}.includes('moderator muted you in this channel')")
    pm.mouse.up()

    row.get_by_role("button", name="Unmute").click()
    wait(pm, f"() => {toast}.includes('talk again')")
    row.locator(".cb-tag.muted").wait_for(state="detached")
    assert row.get_by_role("button", name="Mute").is_visible()
    for page in (po, pm):
        assert page.errors == []


# The encoder's flush never settles (as on a machine too busy to run it, or a device gone).
STALLED_ENCODER = """(() => {
  if (self.AudioEncoder) AudioEncoder.prototype.flush = () => new Promise(() => {});
  if (self.MediaRecorder) MediaRecorder.prototype.stop = function () {};
})()"""


def test_release_reaches_the_channel_when_the_capture_stalls(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    talker, listener = UserFactory(), UserFactory()
    channel = channel_create(creator=talker, name="Stalled")
    pt = open_cbline(new_context, live_asgi, talker, init_script=STALLED_ENCODER)
    pl = open_cbline(new_context, live_asgi, listener)
    enter(pt, channel)
    enter(pl, channel)
    wait(pt, "() => window.cbline.state.members.length === 2")

    pt.get_by_test_id("cb-ptt").hover()
    pt.mouse.down()
    wait(pt, "() => window.cbline.state.talking")
    wait(pl, "() => window.cbline.state.talker !== null")
    pt.mouse.up()
    # The listener sees the floor free long before the talker's maximum length runs out,
    # and the listener can talk.
    wait(pl, "() => window.cbline.state.talker === null", timeout=5_000, also=[pt])
    assert stats(pt)["slowStops"] == 1 and stats(pt)["releases"] == 1
    pl.get_by_test_id("cb-ptt").hover()
    pl.mouse.down()
    wait(pl, "() => window.cbline.state.talking")
    pl.mouse.up()
    for page in (pt, pl):
        assert page.errors == []
