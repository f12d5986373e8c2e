"""Video chat in a real browser: two (then three) people in separate browser contexts, the
real daphne server, real matchmaking in Redis, and a real WebRTC call on loopback with
Chromium's fake camera and microphone. Translation goes to a local stand-in that speaks
LibreTranslate's HTTP API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import login
from tests.nginx_stack import scrape

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "var"
MEDIA_TIMEOUT_S = 25.0
FRAMES: dict[Any, list[str]] = {}


@pytest.fixture(autouse=True)
def _forget_frames() -> Iterator[None]:
    yield
    FRAMES.clear()


# --- a LibreTranslate stand-in: POST /translate {q, source, target} -> {translatedText}
@dataclass
class Translator:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def translator() -> Iterator[Translator]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            seen.append({"path": self.path, **body})
            text = f"[{body.get('source')}>{body.get('target')}] {body.get('q')}"
            payload = json.dumps({"translatedText": text}).encode()
            self.send_response(200 if self.path == "/translate" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Translator(url=f"http://127.0.0.1:{httpd.server_address[1]}", requests=seen)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(proxied_servers: Callable[..., Any], translator: Translator) -> Any:
    """Production's path: nginx in front of two uvicorn processes (so two people are often
    on different processes)."""
    return proxied_servers(
        {"TRANSLATION_BACKEND": "libretranslate", "LIBRETRANSLATE_URL": translator.url}
    )


# --- helpers
def open_videochat(new_context, server, user, **context_args):  # type: ignore[no-untyped-def]
    page = login(new_context(**context_args), server, user)
    # The socket's frames (signals left out), to say what happened when a wait times out.
    log: list[str] = []
    page.on("console", lambda m: log.append(f"console {m.type}: {m.text}"))

    def watch(ws):  # type: ignore[no-untyped-def]
        for event, arrow in (("framesent", ">"), ("framereceived", "<")):
            ws.on(
                event,
                lambda f, a=arrow: log.append(f"{a} {f}"[:300]) if '"signal"' not in f else None,
            )

    page.on("websocket", watch)
    FRAMES[page] = log
    page.goto(f"{server.url}/videochat/")
    # The camera preview is up once Start is enabled.
    page.wait_for_selector("[data-testid=start]:enabled", timeout=15000)
    return page


def choose(page, *, language: str = "en", translate_to: str = "") -> None:  # type: ignore[no-untyped-def]
    page.select_option("[data-testid=language]", language)
    page.select_option("[data-testid=translate-to]", translate_to)


def press_start(page) -> None:  # type: ignore[no-untyped-def]
    page.click("[data-testid=start]")


def state(page) -> str:  # type: ignore[no-untyped-def]
    return page.evaluate("window.videochat.state")


def stats(page) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return page.evaluate("window.videochat.stats()")


def wait_state(page, wanted: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    try:
        page.wait_for_function(
            "s => window.videochat && window.videochat.state === s",
            arg=wanted,
            timeout=timeout * 1000,
        )
    except Exception:
        history = "\n".join(
            f"{'*' if p is page else ' '}{i} {line}"
            for i, p in enumerate(FRAMES)
            for line in FRAMES[p][-12:]
        )
        raise AssertionError(
            f"state {state(page)!r}, wanted {wanted!r}; last frames:\n{history}"
        ) from None


def wait_queued(page) -> None:  # type: ignore[no-untyped-def]
    """Until the server has put this person in the queue (arrival order is the server's)."""
    page.wait_for_selector("[data-videochat][data-queued=true]", state="attached", timeout=15000)


def wait_video(page) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Until the partner's video is playing here: a frame size and bytes received."""
    deadline = time.monotonic() + MEDIA_TIMEOUT_S
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = stats(page)
        if last["remoteVideoWidth"] > 0 and last["inboundBytes"] > 0:
            return last
        page.wait_for_timeout(250)
    raise AssertionError(f"no partner video within {MEDIA_TIMEOUT_S}s: {last}")


def meet(a, b) -> str:  # type: ignore[no-untyped-def]
    """Both press Start; returns the match id once each receives the other's video."""
    press_start(a)
    wait_queued(a)
    press_start(b)
    wait_state(a, "matched")
    wait_state(b, "matched")
    sa, sb = wait_video(a), wait_video(b)
    assert sa["matchId"] == sb["matchId"] and sa["matchId"]
    return sa["matchId"]


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --- tests
def test_lobby_shows_preview_and_locks_paid_filters(server, make_user, new_context) -> None:  # type: ignore[no-untyped-def]
    page = open_videochat(new_context, server, make_user(), viewport={"width": 1366, "height": 860})
    assert state(page) == "idle"
    # Own camera preview is live before starting.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=local-video]').videoWidth > 0"
    )
    # Without the paid entitlement the filters are disabled and say why.
    assert page.is_disabled("[data-testid=want-gender]")
    assert page.is_disabled("[data-testid=want-country]")
    assert page.is_visible("text=Gender and country filters come with Premium")
    assert page.is_enabled("[data-testid=gender]")
    assert page.locator("[data-testid=want-country] option").count() > 200
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "videochat-lobby.png"))

    # Mute: the microphone track stops sending; the camera likewise.
    page.click("[data-testid=toggle-mic]")
    assert page.get_attribute("[data-testid=toggle-mic]", "aria-pressed") == "true"
    assert page.evaluate(
        "document.querySelector('[data-testid=local-video]').srcObject"
        ".getAudioTracks().every(t => !t.enabled)"
    )
    page.click("[data-testid=toggle-cam]")
    assert page.evaluate(
        "document.querySelector('[data-testid=local-video]').srcObject"
        ".getVideoTracks().every(t => !t.enabled)"
    )
    page.click("[data-testid=toggle-mic]")
    assert page.get_attribute("[data-testid=toggle-mic]", "aria-pressed") == "false"


def test_language_choices_are_remembered_on_the_profile(server, make_user, new_context) -> None:  # type: ignore[no-untyped-def]
    from accounts.models import Profile

    user = make_user()
    page = open_videochat(new_context, server, user)
    page.select_option("[data-testid=gender]", "f")
    choose(page, language="fr", translate_to="de")
    wait_until(
        lambda: Profile.objects.filter(
            user=user, gender="f", language="fr", translation_target="de"
        ).exists(),
        what="the profile to hold the chat settings",
    )
    page.reload()
    page.wait_for_selector("[data-testid=start]:enabled", timeout=15000)
    assert page.input_value("[data-testid=gender]") == "f"
    assert page.input_value("[data-testid=language]") == "fr"
    assert page.input_value("[data-testid=translate-to]") == "de"


def test_premium_gender_filter_decides_who_is_met(server, make_user, new_context) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import grant_premium

    premium_user = make_user()
    grant_premium(premium_user)
    premium = open_videochat(new_context, server, premium_user)
    mike = open_videochat(new_context, server, make_user())
    fiona = open_videochat(new_context, server, make_user())

    assert premium.is_enabled("[data-testid=want-gender]")
    assert not premium.is_visible("text=Gender and country filters come with Premium")
    premium.select_option("[data-testid=gender]", "m")
    premium.select_option("[data-testid=want-gender]", "f")
    mike.select_option("[data-testid=gender]", "m")
    fiona.select_option("[data-testid=gender]", "f")

    press_start(premium)
    wait_queued(premium)
    press_start(mike)
    # The barrier: mike is told he waits only after the step that would have paired him with
    # premium found no match, so neither side has a match on its way.
    wait_queued(mike)
    assert state(premium) == "waiting" and state(mike) == "waiting"  # a man is not a match

    press_start(fiona)
    wait_state(fiona, "matched")
    wait_state(premium, "matched")
    assert wait_video(premium)["matchId"] == wait_video(fiona)["matchId"]
    assert state(mike) == "waiting"
    assert "woman" in premium.inner_text("[data-testid=partner]")


def test_two_strangers_see_each_other_and_chat_is_translated(  # type: ignore[no-untyped-def]
    server, make_user, new_context, translator
) -> None:
    desk = {"viewport": {"width": 1366, "height": 860}}
    alice = open_videochat(new_context, server, make_user(), **desk)
    bob = open_videochat(new_context, server, make_user(), **desk)
    choose(alice, language="de", translate_to="")
    choose(bob, language="en", translate_to="en")

    press_start(alice)
    wait_state(alice, "waiting")
    alice.wait_for_selector("[data-testid=searching]", state="visible")
    assert alice.inner_text("[data-testid=expected-wait]").strip()
    SHOTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(SHOTS / "videochat-searching.png"))

    press_start(bob)
    for page in (alice, bob):
        wait_state(page, "matched")
        s = wait_video(page)
        assert s["remoteVideoWidth"] >= 320
        assert page.is_visible("[data-testid=partner]")
    # The operators' view of it (either process reports both: shared multi-process files).
    seen = scrape(server, process=1)
    assert seen["videochat_matches_total"] == 1
    assert seen["videochat_time_to_match_seconds_count"] == 2  # each of the two
    assert seen["videochat_queue_length"] == 0
    assert seen['comms_websocket_connections{product="videochat"}'] == 2

    alice.fill("[data-testid=chat-input]", "Hallo, wie geht's?")
    alice.click("[data-testid=chat-send]")

    line = bob.locator("[data-testid=chat-line]").last
    line.wait_for(timeout=10000)
    assert line.locator(".vc-original").inner_text() == "Hallo, wie geht's?"
    translated = line.locator("[data-testid=chat-translation]")
    translated.wait_for(timeout=10000)
    assert translated.inner_text() == "[de>en] Hallo, wie geht's?"
    # Alice asked for no translation: she sees her own words only.
    own = alice.locator("[data-testid=chat-line]").last
    own.wait_for(timeout=10000)
    assert own.locator(".vc-original").inner_text() == "Hallo, wie geht's?"
    assert own.locator("[data-testid=chat-translation]").count() == 0
    assert {"path": "/translate", "source": "de", "target": "en"}.items() <= translator.requests[
        -1
    ].items()

    bob.fill("[data-testid=chat-input]", "Hi Alice! Nice to meet you.")
    bob.press("[data-testid=chat-input]", "Enter")
    alice.locator("[data-testid=chat-line]").nth(1).wait_for(timeout=10000)
    # A few more frames for the picture.
    frames = "() => document.querySelector('[data-testid=remote-video]')"
    frames += ".getVideoPlaybackQuality().totalVideoFrames"
    bob.wait_for_function(f"n => ({frames})() >= n", arg=bob.evaluate(frames) + 5)
    bob.screenshot(path=str(SHOTS / "videochat-match.png"))

    # The page on a phone: the two videos stacked.
    phone = open_videochat(
        new_context,
        server,
        make_user(),
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    remote_box = phone.locator(".vc-remote").bounding_box()
    local_box = phone.locator(".vc-local").bounding_box()
    assert remote_box and local_box and local_box["y"] >= remote_box["y"] + remote_box["height"] - 1
    phone.screenshot(path=str(SHOTS / "videochat-mobile.png"), full_page=True)


def test_next_requeues_both_and_a_third_person_meets_one_of_them(  # type: ignore[no-untyped-def]
    server, make_user, new_context
) -> None:
    alice = open_videochat(new_context, server, make_user())
    bob = open_videochat(new_context, server, make_user())
    carol = open_videochat(new_context, server, make_user())
    first = meet(alice, bob)

    press_start(carol)
    wait_queued(carol)

    alice.click("[data-testid=next]")
    # Alice skipped Bob: she meets Carol, who was waiting; Bob is back in the queue.
    wait_state(carol, "matched")
    wait_state(alice, "matched")
    wait_state(bob, "waiting")
    sa, sc = wait_video(alice), wait_video(carol)
    assert sa["matchId"] == sc["matchId"] != first
    assert stats(bob)["matchId"] is None
    assert bob.is_visible("[data-testid=searching]")

    # Carol presses Next: the skip keeps her from Alice again, so she meets Bob.
    carol.click("[data-testid=next]")
    wait_state(bob, "matched")
    wait_state(carol, "matched")
    sb, sc2 = wait_video(bob), wait_video(carol)
    assert sb["matchId"] == sc2["matchId"] not in (first, sa["matchId"])
    wait_state(alice, "waiting")

    # Stop ends the session for that person; the partner goes back to searching.
    bob.click("[data-testid=stop]")
    wait_state(bob, "ended")
    wait_state(carol, "waiting")


def test_a_partner_who_closes_the_page_frees_the_other(server, make_user, new_context) -> None:  # type: ignore[no-untyped-def]
    alice = open_videochat(new_context, server, make_user())
    bob = open_videochat(new_context, server, make_user())
    meet(alice, bob)
    bob.close()
    wait_state(alice, "waiting")
    alice.wait_for_selector("text=Your partner's connection dropped", timeout=10000)
    assert stats(alice)["remoteVideoWidth"] == 0

    # Carol is on a phone.
    carol = open_videochat(
        new_context,
        server,
        make_user(),
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    press_start(carol)
    wait_state(carol, "matched")
    wait_state(alice, "matched")
    assert wait_video(alice)["matchId"] == wait_video(carol)["matchId"]
    alice.fill("[data-testid=chat-input]", "Hi from a laptop")
    alice.click("[data-testid=chat-send]")
    carol.locator("[data-testid=chat-line]").first.wait_for(timeout=10000)
    SHOTS.mkdir(exist_ok=True)
    carol.screenshot(path=str(SHOTS / "videochat-mobile-match.png"), full_page=True)


def test_report_sends_chat_lines_and_a_still_of_the_partner(  # type: ignore[no-untyped-def]
    server, make_user, new_context
) -> None:
    from videochat.models import Report

    alice_user, bob_user = make_user(), make_user()
    alice = open_videochat(new_context, server, alice_user)
    bob = open_videochat(new_context, server, bob_user)
    meet(alice, bob)

    alice.fill("[data-testid=chat-input]", "buy cheap followers at example.test")
    alice.click("[data-testid=chat-send]")
    bob.locator("[data-testid=chat-line]").first.wait_for(timeout=10000)
    bob.fill("[data-testid=chat-input]", "no thanks")
    bob.click("[data-testid=chat-send]")
    bob.locator("[data-testid=chat-line]").nth(1).wait_for(timeout=10000)

    bob.click("[data-testid=report]")
    bob.wait_for_selector("[data-testid=report-dialog]", state="visible")
    bob.select_option("[data-testid=report-reason]", "spam")
    # Bob chooses what moderators see: the still, and not his own line.
    lines = bob.locator("[data-testid=report-line]")
    assert lines.all_inner_texts() == [
        "Them: buy cheap followers at example.test",
        "You: no thanks",
    ]
    lines.nth(1).locator("input").uncheck()
    bob.click("[data-testid=report-send]")

    report = wait_until(
        lambda: Report.objects.filter(reporter=bob_user).first(), timeout=15, what="the report row"
    )
    assert report.reported_id == alice_user.pk
    assert report.reason == "spam"
    assert report.chat_lines == [{"from": "partner", "text": "buy cheap followers at example.test"}]
    assert report.frame
    with Image.open(report.frame.path) as img:
        img.verify()
        assert img.format == "JPEG"
        assert img.size[0] >= 320
    # Reporting moves the reporter on, and the reported partner back to the queue.
    bob.wait_for_selector("text=your report was sent", timeout=10000)
    wait_state(alice, "waiting")
    assert not alice.is_visible("[data-testid=partner]")

    # A moderator bans Alice from the report: her open page stops at once and says why.
    ban_in_another_thread(report)
    alice.wait_for_selector("[data-videochat][data-blocked=true]", state="attached", timeout=10000)
    assert alice.is_visible("text=You are banned from video chat")
    assert not alice.is_visible("[data-testid=start]")
    SHOTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(SHOTS / "videochat-banned-live.png"))
    alice.reload()
    alice.wait_for_selector("[data-testid=videochat-banned]")


def test_a_report_sent_without_the_still_or_a_line_keeps_neither(  # type: ignore[no-untyped-def]
    server, make_user, new_context
) -> None:
    from videochat.models import Report

    alice_user, bob_user = make_user(), make_user()
    alice = open_videochat(new_context, server, alice_user)
    bob = open_videochat(new_context, server, bob_user)
    meet(alice, bob)
    alice.fill("[data-testid=chat-input]", "hello there")
    alice.click("[data-testid=chat-send]")
    bob.locator("[data-testid=chat-line]").first.wait_for(timeout=10000)

    bob.click("[data-testid=report]")
    bob.wait_for_selector("[data-testid=report-dialog]", state="visible")
    bob.locator("[data-testid=report-still]").uncheck()
    bob.locator("[data-testid=report-line] input").uncheck()
    bob.click("[data-testid=report-send]")
    report = wait_until(
        lambda: Report.objects.filter(reporter=bob_user).first(), timeout=15, what="the report row"
    )
    assert report.reported_id == alice_user.pk
    assert report.chat_lines == []
    assert not report.frame


def ban_in_another_thread(report) -> None:  # type: ignore[no-untyped-def]
    """services.ban_create, run off this thread: Playwright's event loop runs in this one, and
    the ban's socket event is sent through async_to_sync."""
    import datetime as dt

    from django.db import connection

    from videochat.services import ban_create

    errors: list[BaseException] = []

    def run() -> None:
        try:
            ban_create(
                user=report.reported,
                reason="Spam",
                duration=dt.timedelta(days=1),
                created_by=None,
                report=report,
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=20)
    assert not errors, errors
