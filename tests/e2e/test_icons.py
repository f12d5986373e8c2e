"""Every icon and flag on every page renders on a machine with no emoji font (like this one):
no page text relies on emoji or other characters outside the basic plane, every `.icon`
(lucide-static, drawn as a mask) and every `.fi` flag (flag-icons) loads its SVG, and the
favicon is served. Screenshots at phone and desktop width are kept in test-results/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import login
from tests.e2e.test_voice import enter, wait
from tests.factories import UserFactory
from voice.services import channel_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results" / "icons"
WIDTHS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 860}}
PAGES = [
    "/",
    "/profile/",
    "/profile/birth-date/change/",
    "/devices/",
    "/accounts/3rdparty/",
    "/cbline/",
    "/videochat/",
    "/messaging/",
    "/premium/",
    "/privacy/",
]
# Emoji, pictographs, dingbats, regional indicators, variation selectors, and anything
# outside the basic plane (e.g. mathematical letters): all need fonts many systems lack.
NEEDS_FONT = re.compile("[\u2600-\u27bf\u2b00-\u2bff\ufe0f\U00010000-\U0010ffff]")

# What the page shows as text (including ::before/::after content and <option>s), and for
# every icon and flag, its size and the image it draws.
INSPECT = """() => {
  const pseudo = [];
  for (const el of document.querySelectorAll('body *')) {
    for (const p of ['::before', '::after']) {
      const c = getComputedStyle(el, p).content;
      if (c && c !== 'none' && c !== 'normal') pseudo.push(c);
    }
  }
  const url = (v) => (v.match(/url\\("?([^")]+)"?\\)/) || [])[1] || null;
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    text: document.body.innerText,
    options: [...document.querySelectorAll('option')].map((o) => o.textContent).join('\\n'),
    pseudo: pseudo.join('\\n'),
    icons: [...document.querySelectorAll('.icon')].map((el) => ({
      cls: el.className, size: box(el),
      src: url(getComputedStyle(el).maskImage || getComputedStyle(el).webkitMaskImage),
      visible: el.checkVisibility() })),
    flags: [...document.querySelectorAll('.fi')].map((el) => ({
      cls: el.className, size: box(el), src: url(getComputedStyle(el).backgroundImage),
      visible: el.checkVisibility() })),
  };
}"""


def check_page(page: Any, base: str, path: str, width: str) -> tuple[int, int]:
    seen = page.evaluate(INSPECT)
    for where in ("text", "options", "pseudo"):
        bad = sorted(set(NEEDS_FONT.findall(seen[where])))
        assert not bad, f"{path} ({width}) {where} needs a font: {[hex(ord(c)) for c in bad]}"
    for kind in ("icons", "flags"):
        for item in seen[kind]:
            assert item["src"], f"{path}: {item['cls']} draws no image"
            status = page.request.get(item["src"] if "://" in item["src"] else base + item["src"])
            assert status.ok and "svg" in status.headers["content-type"], (path, item)
            if item["visible"]:
                assert item["size"][0] > 4 and item["size"][1] > 4, (path, item)
    slug = path.strip("/").replace("/", "-") or "home"
    page.screenshot(path=str(ARTIFACTS / f"{slug}-{width}.png"), full_page=True)
    return len(seen["icons"]), len(seen["flags"])


def test_every_icon_and_flag_renders_without_an_emoji_font(live_asgi, new_context) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    user, other = UserFactory(), UserFactory()
    favicon = None
    totals = {"icons": 0, "flags": 0}
    for width, viewport in WIDTHS.items():
        channel = channel_create(creator=user, name=f"Icons {width}", password="pw-123456")
        # Anonymous pages first.
        anon = new_context(viewport=viewport).new_page()
        for path in ("/", "/accounts/login/", "/accounts/signup/"):
            anon.goto(live_asgi.url + path)
            check_page(anon, live_asgi.url, path, f"{width}-anon")
        favicon = anon.request.get(live_asgi.url + "/favicon.ico")

        context = new_context(viewport=viewport, permissions=["microphone"])
        page = login(context, live_asgi, user)
        errors: list[str] = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        for path in PAGES:
            response = page.goto(live_asgi.url + path)
            assert response is not None and response.status < 400, (path, response)
            page.wait_for_load_state("networkidle")
            if path == "/cbline/":
                # In a channel with a second member: member flags, lock, mic, leave icons.
                wait(page, "() => window.cbline && window.cbline.state.open")
                peer = login(new_context(viewport=viewport), live_asgi, other)
                peer.goto(live_asgi.url + "/cbline/")
                enter(page, channel)
                peer.get_by_test_id(f"cb-channel-{channel.pk}").click()
                peer.get_by_test_id("cb-password").fill("pw-123456")
                peer.get_by_test_id("cb-password-submit").click()
                wait(page, "() => window.cbline.state.members.length === 2")
            icons, flags = check_page(page, live_asgi.url, path, width)
            totals["icons"] += icons
            totals["flags"] += flags
        assert errors == []
    assert favicon is not None and favicon.ok and "svg" in favicon.headers["content-type"]
    # The pages do use them (a test that finds none proves nothing).
    assert totals["icons"] >= 10 and totals["flags"] >= 4, totals
