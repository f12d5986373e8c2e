"""CallsApp end to end, in real Chromium against a real server: every key is made and kept in
the browsers (matrix-sdk-crypto-wasm), the server relays ciphertext only."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from accounts.models import Device
from messaging.models import MediaBlob
from realtime.models import StreamItem
from tests.e2e.conftest import login, server_log, wait_for
from tests.factories import UserFactory
from tests.messaging.scan import plaintext_found

pytestmark = pytest.mark.e2e

VAR = Path(__file__).resolve().parents[2] / "var"


def open_callsapp(context, server, user) -> Page:  # type: ignore[no-untyped-def]
    page = login(context, server, user)
    # What the page said, for a failure's message (a flaky step says which side stalled).
    page.said = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.said.append(f"{m.type}: {m.text}"))  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.said.append(f"pageerror: {e}"))  # type: ignore[attr-defined]
    page.goto(f"{server.url}/messaging/")
    expect(page.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    return page


def device_of(page: Page) -> Device:
    device_id = page.evaluate("window.callsapp.deviceId")
    return Device.objects.get(device_id=device_id)


def start_chat(page: Page, term: str) -> None:
    page.get_by_test_id("new-chat").click()
    page.fill("#ca-new-chat", term)
    page.get_by_test_id("new-chat-form").locator("button[type=submit]").click()
    # The room is made on the server and its keys shared first: seconds on a loaded machine.
    expect(page.get_by_test_id("composer")).to_be_visible(timeout=20000)


def send(page: Page, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("message-input").press("Enter")
    mine = page.locator(".ca-msg.mine", has_text=text)
    expect(mine.get_by_test_id("tick")).not_to_have_attribute(
        "data-status", "sending", timeout=20000
    )


def create_group(page: Page, name: str, members: str) -> None:
    page.get_by_test_id("new-group").click()
    page.fill("#ca-group-name", name)
    page.fill("#ca-group-members", members)
    page.get_by_test_id("new-group-form").locator("button[type=submit]").click()
    expect(page.get_by_test_id("room-name")).to_have_text(name)


def open_room(page: Page, name: str) -> None:
    page.get_by_test_id("room-list").locator("li", has_text=name).get_by_test_id("room").click()


def chatting(server, new_context, first: str, second: str, greeting: str):  # type: ignore[no-untyped-def]
    """Two people, each on a browser of their own: `first` starts a chat with `second` by
    nickname and says `greeting`, which `second` reads in the chat. Returns both pages and
    both users."""
    users = [UserFactory(profile__nickname=name) for name in (first, second)]
    pages = [open_callsapp(new_context(), server, user) for user in users]
    start_chat(pages[0], second.lower())
    send(pages[0], greeting)
    open_room(pages[1], first)
    expect(pages[1].locator(".ca-msg.theirs", has_text=greeting)).to_be_visible(timeout=20000)
    return pages[0], pages[1], users[0], users[1]


def test_two_devices_and_a_contact_offline_then_online(live_asgi, new_context):
    alice = UserFactory(profile__nickname="Alice")
    bob = UserFactory(profile__nickname="Bob")
    a1 = open_callsapp(new_context(viewport={"width": 1280, "height": 860}), live_asgi, alice)
    a2 = open_callsapp(new_context(viewport={"width": 390, "height": 844}), live_asgi, alice)
    bob_context = new_context()
    b1 = open_callsapp(bob_context, live_asgi, bob)
    bob_device = device_of(b1)
    assert device_of(a1).device_id != device_of(a2).device_id
    b1.close()  # Bob goes offline; his device and keys stay

    secret = "Meet at the old lighthouse at seven"
    start_chat(a1, "bob")  # exact nickname, any case
    send(a1, secret)
    # Bob is offline: his delivery waits on the server, as ciphertext.
    wait_for(
        lambda: StreamItem.objects.filter(device_pk=bob_device.pk).exists(),
        a1,
        "Bob's pending delivery",
    )
    expect(a1.locator(".ca-msg.mine", has_text=secret).get_by_test_id("tick")).to_have_attribute(
        "data-status", "sent"
    )

    # Alice's second device shows it, from a phone-width page.
    expect(a2.get_by_test_id("room-list").get_by_test_id("room")).to_have_count(1, timeout=20000)
    open_room(a2, "Bob")
    expect(a2.get_by_test_id("timeline").locator(".ca-msg.mine", has_text=secret)).to_be_visible(
        timeout=20000
    )
    a2.screenshot(path=str(VAR / "e2e-callsapp-phone.png"))

    # Bob comes back: the backlog arrives, decrypted, with an unread count.
    b1 = bob_context.new_page()
    b1.goto(f"{live_asgi.url}/messaging/")
    expect(b1.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    room = b1.get_by_test_id("room-list").locator("li", has_text="Alice")
    expect(room.get_by_test_id("unread")).to_have_text("1", timeout=20000)
    open_room(b1, "Alice")
    message = b1.get_by_test_id("timeline").locator(".ca-msg.theirs", has_text=secret)
    expect(message).to_be_visible()
    expect(b1.get_by_test_id("e2e-status")).to_contain_text("End-to-end encrypted")
    expect(room.get_by_test_id("unread")).to_have_count(0)

    # Every target device acked: the sender sees "delivered", and the server kept nothing.
    tick = a1.locator(".ca-msg.mine", has_text=secret).get_by_test_id("tick")
    expect(tick).to_have_attribute("data-status", re.compile("delivered|seen"), timeout=20000)
    devices = [device_of(p).pk for p in (a1, a2, b1)]
    wait_for(lambda: not StreamItem.objects.filter(device_pk__in=devices).exists(), a1, "all acks")
    a1.screenshot(path=str(VAR / "e2e-callsapp-desktop.png"))

    # Bob replies; Alice's devices both get it.
    send(b1, "I'll bring the lantern")
    for page in (a1, a2):
        expect(
            page.get_by_test_id("timeline").locator(".ca-msg.theirs", has_text="bring the lantern")
        ).to_be_visible(timeout=20000)

    assert plaintext_found([secret, "bring the lantern"]) == []


def test_group_of_three_and_a_removed_member_gets_nothing_new(live_asgi, new_context):
    ann, ben, cat = (UserFactory(profile__nickname=n) for n in ("Ann", "Ben", "Cat"))
    pages = {
        u.profile.nickname: open_callsapp(new_context(), live_asgi, u) for u in (ann, ben, cat)
    }
    a = pages["Ann"]
    a.get_by_test_id("new-group").click()
    a.fill("#ca-group-name", "Hiking club")
    a.fill("#ca-group-members", "ben\n" + cat.email)  # nickname or email, exact
    a.get_by_test_id("new-group-form").locator("button[type=submit]").click()
    expect(a.get_by_test_id("room-name")).to_have_text("Hiking club")
    send(a, "Trail starts at the north gate")
    for name in ("Ben", "Cat"):
        open_room(pages[name], "Hiking club")
        expect(pages[name].locator(".ca-msg.theirs", has_text="north gate")).to_be_visible(
            timeout=20000
        )

    # Ann removes Cat; the next message goes to Ben only, under a new room key.
    a.get_by_test_id("open-manage").click()
    a.get_by_test_id("members").locator("li", has_text="Cat").get_by_test_id("kick").click()
    expect(a.get_by_test_id("members").locator("li")).to_have_count(2)
    a.get_by_test_id("manage-panel").locator("[data-action=close-panel]").click()
    send(a, "Moved to the south gate")
    expect(pages["Ben"].locator(".ca-msg.theirs", has_text="south gate")).to_be_visible(
        timeout=20000
    )
    expect(
        pages["Cat"]
        .get_by_test_id("timeline")
        .get_by_test_id("notice")
        .filter(has_text="Ann removed you")
    ).to_be_visible(timeout=20000)
    expect(pages["Cat"].locator("[data-left]")).to_be_visible()
    cat_device = device_of(pages["Cat"])
    wait_for(
        lambda: not StreamItem.objects.filter(device_pk=cat_device.pk).exists(), a, "Cat's acks"
    )
    # Cat's device got neither the message nor anything it could decrypt it with.
    assert pages["Cat"].locator(".ca-msg", has_text="south gate").count() == 0
    assert pages["Cat"].get_by_test_id("undecryptable").count() == 0
    # Ben holds the two room keys (before and after the removal); Cat only the first.
    keys = "async () => Number((await window.callsapp.machine.roomKeyCounts()).total)"
    assert pages["Ben"].evaluate(keys) == 2
    assert pages["Cat"].evaluate(keys) == 1
    assert plaintext_found(["north gate", "south gate"]) == []


def test_two_tabs_of_one_device_do_not_fork(live_asgi, new_context):
    dee = UserFactory(profile__nickname="Dee")
    eve = UserFactory(profile__nickname="Eve")
    context = new_context()
    first = open_callsapp(context, live_asgi, dee)
    identity = first.evaluate("window.callsapp.machine.identityKeys.curve25519.toBase64()")
    second = context.new_page()
    second.goto(f"{live_asgi.url}/messaging/")
    expect(second.get_by_test_id("callsapp")).to_have_attribute("data-state", "waiting")
    expect(second.get_by_test_id("ca-status")).to_contain_text("open in another tab")
    e = open_callsapp(new_context(), live_asgi, eve)
    start_chat(first, "eve")
    send(first, "from the first tab")
    first.close()
    # The second tab takes over the same device, with the same keys, and goes on.
    expect(second.get_by_test_id("callsapp")).to_have_attribute(
        "data-state", "ready", timeout=30000
    )
    assert second.evaluate("window.callsapp.machine.identityKeys.curve25519.toBase64()") == identity
    open_room(second, "Eve")
    send(second, "from the second tab")
    open_room(e, "Dee")
    for text in ("from the first tab", "from the second tab"):
        expect(e.locator(".ca-msg.theirs", has_text=text)).to_be_visible(timeout=20000)
    assert e.get_by_test_id("undecryptable").count() == 0
    assert Device.objects.filter(user=dee).count() == 1


def test_evicted_storage_makes_a_new_device_never_the_old_id(live_asgi, new_context):
    fay = UserFactory(profile__nickname="Fay")
    context = new_context()
    page = open_callsapp(context, live_asgi, fay)
    old_id = page.evaluate("window.callsapp.deviceId")
    # The browser drops the site's storage (eviction, "clear site data").
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
    expect(page.get_by_test_id("ca-status")).to_contain_text("sign in again")
    page.get_by_test_id("nav-logout").click()
    page = open_callsapp(context, live_asgi, fay)
    assert page.evaluate("window.callsapp.deviceId") != old_id


def test_attachment_delete_for_everyone_undelivered_and_block(live_asgi, new_context):
    ivy = UserFactory(profile__nickname="Ivy")
    jon = UserFactory(profile__nickname="Jon")
    i = open_callsapp(new_context(), live_asgi, ivy)
    jon_context = new_context()
    j = open_callsapp(jon_context, live_asgi, jon)
    start_chat(i, "jon")
    send(i, "a file follows")

    # An attachment: encrypted in the browser, only ciphertext uploaded, checked and
    # decrypted by the receiver, and the blob gone once Jon's device has fetched it.
    # Other tests of the run may leave their own CallsApp files in MEDIA_ROOT: watch ours.
    media = Path(live_asgi_media_root()) / "messaging"
    before = {f for f in media.rglob("*") if f.is_file()}
    i.get_by_test_id("attach").set_input_files(
        {"name": "plan.txt", "mimeType": "text/plain", "buffer": b"the plan: north ridge at dawn"}
    )
    expect(i.get_by_test_id("file-link")).to_be_visible(timeout=20000)
    open_room(j, "Ivy")
    link = j.get_by_test_id("file-link")
    expect(link).to_contain_text("plan.txt", timeout=20000)
    with j.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == b"the plan: north ridge at dawn"
    assert download.value.suggested_filename == "plan.txt"
    assert plaintext_found(["north ridge at dawn"]) == []
    wait_for(
        lambda: not ({f for f in media.rglob("*") if f.is_file()} - before),
        i,
        "the blob's deletion",
    )

    # Delete for everyone.
    send(i, "wrong chat, sorry")
    expect(j.locator(".ca-msg.theirs", has_text="wrong chat")).to_be_visible(timeout=20000)
    mine = i.locator(".ca-msg.mine", has_text="wrong chat")
    target = mine.get_attribute("data-event-id")
    i.once("dialog", lambda d: d.accept())
    mine.get_by_test_id("redact").click()
    try:
        expect(j.locator(".ca-msg.theirs", has_text="wrong chat")).to_have_count(0, timeout=20000)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{redaction_report(live_asgi, i, j, target)}") from exc
    expect(j.get_by_test_id("deleted")).to_have_count(1)

    # Jon goes offline. A file Ivy sends and then deletes for everyone before his device
    # fetched it leaves nothing behind: the redaction names it, and the server deletes it.
    j.close()
    i.get_by_test_id("attach").set_input_files(
        {"name": "draft.txt", "mimeType": "text/plain", "buffer": b"not this draft"}
    )
    draft = i.locator(".ca-msg.mine", has_text="draft.txt")
    expect(draft.get_by_test_id("tick")).to_have_attribute("data-status", "sent", timeout=20000)
    (stored,) = {f for f in media.rglob("*") if f.is_file()} - before
    assert MediaBlob.objects.filter(media_id=stored.name).exists()
    i.once("dialog", lambda d: d.accept())
    draft.get_by_test_id("redact").click()
    expect(i.locator(".ca-msg.mine", has_text="draft.txt")).to_have_count(0, timeout=20000)
    wait_for(lambda: not stored.exists(), i, "the deleted message's file")
    assert not MediaBlob.objects.filter(media_id=stored.name).exists()  # download: 404

    # Ivy sees her message waiting, and when it will expire.
    send(i, "are you there?")
    i.get_by_test_id("open-undelivered").click()
    row = i.get_by_test_id("undelivered").filter(has_text="are you there?")
    expect(row).to_contain_text("waiting for 1 device")
    expect(row).to_contain_text("deleted undelivered on")
    i.get_by_test_id("undelivered-panel").locator("[data-action=close-panel]").click()

    # Jon blocks Ivy: her next message is refused by the server, and she is told.
    j = jon_context.new_page()
    j.goto(f"{live_asgi.url}/messaging/")
    expect(j.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    open_room(j, "Ivy")
    j.get_by_test_id("open-manage").click()
    j.get_by_test_id("members").locator("li", has_text="Ivy").get_by_test_id("block").click()
    expect(
        j.get_by_test_id("members").locator("li", has_text="Ivy").get_by_test_id("block")
    ).to_have_text("Unblock")
    i.get_by_test_id("message-input").fill("hello?")
    i.get_by_test_id("message-input").press("Enter")
    failed = i.locator(".ca-msg.mine", has_text="hello?").get_by_test_id("tick")
    expect(failed).to_have_attribute("data-status", "failed", timeout=20000)


def test_a_tick_drawn_while_delete_is_pressed_does_not_lose_the_click(live_asgi, new_context):
    """The page redraws the timeline at every tick. A redraw that replaced the message's
    "Delete for everyone" button between the press and the release lost the click: no
    dialog, no redaction (CI saw the other side keep the message once, under load)."""
    pia = UserFactory(profile__nickname="Pia")
    rex = UserFactory(profile__nickname="Rex")
    p = open_callsapp(new_context(), live_asgi, pia)
    r = open_callsapp(new_context(), live_asgi, rex)
    start_chat(p, "rex")
    send(p, "not for you")
    mine = p.locator(".ca-msg.mine", has_text="not for you")
    # Rex's device has it, unread (his page has not opened the chat).
    expect(mine.get_by_test_id("tick")).to_have_attribute("data-status", "delivered", timeout=20000)
    box = mine.get_by_test_id("redact").bounding_box()
    assert box is not None
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    p.mouse.down()
    # While Pia holds the button, Rex reads the message: her page draws the "seen" tick.
    open_room(r, "Pia")
    expect(mine.get_by_test_id("tick")).to_have_attribute("data-status", "seen", timeout=20000)
    p.once("dialog", lambda d: d.accept())
    p.mouse.up()
    expect(r.locator(".ca-msg.theirs", has_text="not for you")).to_have_count(0, timeout=20000)
    expect(r.get_by_test_id("deleted")).to_have_count(1)
    expect(mine).to_have_count(0)


def test_a_draw_of_the_chat_left_meanwhile_does_not_cover_the_chat_opened(live_asgi, new_context):
    """Timeline draws overlap and finish in any order: one that read the history before a
    later change must not draw over it. Here the older draw waits for a file while Rex
    opens another chat; it used to draw Pia's chat under Sam's name when the file came."""
    pia, rex, sam = (UserFactory(profile__nickname=n) for n in ("Pia", "Rex", "Sam"))
    p = open_callsapp(new_context(), live_asgi, pia)
    r = open_callsapp(new_context(), live_asgi, rex)
    s = open_callsapp(new_context(), live_asgi, sam)
    start_chat(s, "rex")
    send(s, "hi from sam")
    start_chat(p, "rex")
    send(p, "a file follows")
    open_room(r, "Pia")
    expect(r.locator(".ca-msg.theirs", has_text="a file follows")).to_be_visible(timeout=20000)
    # Rex's page fetches the file as soon as the message comes: held until released below.
    held = []
    r.route("**/media/download/**", lambda route: held.append(route))
    with r.expect_request(lambda req: "/media/download/" in req.url, timeout=20000):
        p.get_by_test_id("attach").set_input_files(
            {"name": "map.txt", "mimeType": "text/plain", "buffer": b"the map"}
        )
    open_room(r, "Sam")
    expect(r.locator(".ca-msg.theirs", has_text="hi from sam")).to_be_visible(timeout=20000)
    assert len(held) == 1
    held[0].continue_()
    # Once the file is open, the draws that waited for it have run (what is left of them
    # is promise continuations, all done before the next task).
    r.evaluate(
        """async () => {
          const c = window.callsapp;
          for (const room of await c.history.rooms()) {
            for (const record of await c.history.timeline(room.room_id)) {
              if (record.content?.file) await c.attachment(record.content);
            }
          }
          await new Promise((resolve) => setTimeout(resolve, 0));
        }"""
    )
    expect(r.get_by_test_id("room-name")).to_have_text("Sam")
    expect(r.locator(".ca-msg.theirs", has_text="hi from sam")).to_be_visible()
    expect(r.get_by_test_id("file-link")).to_have_count(0)
    open_room(r, "Pia")
    expect(r.get_by_test_id("file-link")).to_contain_text("map.txt", timeout=20000)


def redaction_report(server, sender: Page, receiver: Page, event_id: str | None) -> str:  # type: ignore[no-untyped-def]
    """Where a "delete for everyone" stopped: the sender's page (did it send it?), the
    server (the redaction stored? still waiting in the receiver's stream?), the receiver's
    history (stored, acked?) and what each page and the server logged."""
    from messaging.models import RoomEvent
    from realtime.models import StreamHead

    device = device_of(receiver)
    # The target and what followed it in its room (a redaction's content is emptied, as
    # every event's, once delivered).
    target = RoomEvent.objects.filter(event_id=event_id).first()
    after = list(
        RoomEvent.objects.filter(room_id=target.room_id, pk__gte=target.pk)
        .order_by("pk")
        .values_list("pk", "type", "event_id", "delivered_at", "content")
        if target
        else []
    )
    pending = list(
        StreamItem.objects.filter(device_pk=device.pk)
        .order_by("seq")
        .values_list("seq", "kind", "ref", "created_at")
    )
    head = StreamHead.objects.filter(device_pk=device.pk).values_list("last_seq", flat=True)
    local = receiver.evaluate(
        """async (id) => {
          const h = window.callsapp.history;
          const r = await h.event(id);
          return {last_seq: await h.getMeta("last_seq", 0), socket_live: window.callsapp.socketLive,
                  target: r && {kind: r.kind, redacted: Boolean(r.redacted)}};
        }""",
        event_id,
    )
    status = sender.locator("[data-status]").first.text_content()
    sender_shows = sender.locator(f'[data-event-id="{event_id}"]').inner_html()
    return (
        f"target {event_id}; it and what followed on the server: {after}\n"
        f"receiver's stream: head {list(head)}, pending {pending}; its page: {local}\n"
        f"sender's status line: {status!r}; its bubble: {sender_shows}\n"
        f"sender's page said: {sender.said}\nreceiver's page said: {receiver.said}\n"  # type: ignore[attr-defined]
        f"server log (end):\n{server_log(server)}"
    )


def live_asgi_media_root() -> str:
    from django.conf import settings

    return settings.MEDIA_ROOT


def test_sas_emoji_verification_between_two_devices(live_asgi, new_context):
    kim = UserFactory(profile__nickname="Kim")
    k1 = open_callsapp(new_context(), live_asgi, kim)
    k2 = open_callsapp(new_context(), live_asgi, kim)
    other = k2.evaluate("window.callsapp.deviceId")
    k1.get_by_test_id("open-devices").click()
    row = k1.get_by_test_id("my-devices").locator(f'[data-device-id="{other}"]')
    expect(row.get_by_test_id("device-trust")).to_have_text("not verified", timeout=20000)
    row.get_by_test_id("verify-device").click()
    # The other device is asked, accepts, and both show the same seven emoji.
    expect(k2.get_by_test_id("sas-accept")).to_be_visible(timeout=20000)
    k2.get_by_test_id("sas-accept").click()
    emoji = []
    for page in (k1, k2):
        expect(page.get_by_test_id("sas-emoji").locator("li")).to_have_count(7, timeout=20000)
        emoji.append(page.get_by_test_id("sas-emoji").inner_text())
    assert emoji[0] == emoji[1]
    for page in (k1, k2):
        page.get_by_test_id("sas-match").click()
    for page in (k1, k2):
        expect(page.get_by_test_id("verify")).to_have_attribute("data-done", "true", timeout=20000)
    k1.get_by_test_id("open-devices").click()
    expect(row.get_by_test_id("device-trust")).to_have_text("verified", timeout=20000)


def test_a_new_device_decrypts_the_very_next_message_and_is_announced(live_asgi, new_context):
    lea_page, _, _, max_ = chatting(live_asgi, new_context, "Lea", "Max", "before your new phone")
    # Max signs in on a second browser: Lea is told, and her very next message reaches it.
    max2 = open_callsapp(new_context(), live_asgi, max_)
    expect(
        lea_page.get_by_test_id("timeline")
        .get_by_test_id("notice")
        .filter(has_text="Max added a device")
    ).to_be_visible(timeout=20000)
    send(lea_page, "hello new phone")
    open_room(max2, "Lea")
    expect(max2.locator(".ca-msg.theirs", has_text="hello new phone")).to_be_visible(timeout=20000)
    # History from before it existed is not readable there, and says so (never a blank).
    assert max2.locator(".ca-msg", has_text="before your new phone").count() == 0


def test_seen_tick_only_while_the_reader_allows_read_receipts(live_asgi, new_context):
    nia = UserFactory(profile__nickname="Nia")
    oto = UserFactory(profile__nickname="Oto")
    n = open_callsapp(new_context(), live_asgi, nia)
    o = open_callsapp(new_context(), live_asgi, oto)
    start_chat(n, "oto")
    send(n, "did you read this?")
    tick = n.locator(".ca-msg.mine", has_text="did you read this?").get_by_test_id("tick")
    expect(tick).to_have_attribute("data-status", "delivered", timeout=20000)
    open_room(o, "Nia")  # Oto reads it
    expect(tick).to_have_attribute("data-status", "seen", timeout=20000)

    # Oto turns read receipts off: the server stops forwarding them.
    o.get_by_test_id("open-devices").click()
    box = o.get_by_test_id("settings-form").locator("input[name=read_receipts]")
    expect(box).to_be_checked()
    with o.expect_response(
        lambda r: r.url.endswith("/messaging/api/settings") and r.request.method == "PUT"
    ):
        box.uncheck()
    o.get_by_test_id("devices-panel").locator("[data-action=close-panel]").click()
    # Watch for Oto's receipt from before the send: his page may show the message (and
    # send its receipt) before Nia's page has its "sent" tick.
    with o.expect_response(lambda r: "/receipt/m.read/" in r.url, timeout=20000):
        send(n, "and this one?")
        expect(o.locator(".ca-msg.theirs", has_text="and this one?")).to_be_visible(timeout=20000)
    second = n.locator(".ca-msg.mine", has_text="and this one?").get_by_test_id("tick")
    # Oto's page sent its receipt (the server accepted and dropped it) and then he answers:
    # his answer reaches Nia after the receipt would have.
    send(o, "yes")
    expect(n.locator(".ca-msg.theirs", has_text="yes")).to_be_visible(timeout=20000)
    expect(second).to_have_attribute("data-status", "delivered")


def test_an_eea_user_under_16_sees_the_privacy_settings_locked_and_why(live_asgi, new_context):
    today = dt.date.today()
    kid = UserFactory(
        profile__nickname="Uli",
        profile__birth_date=today.replace(year=today.year - 14, day=1),
        profile__country="AT",
        profile__show_online_status=False,
        profile__send_read_receipts=False,
    )
    u = open_callsapp(new_context(), live_asgi, kid)
    u.get_by_test_id("open-devices").click()
    form = u.get_by_test_id("settings-form")
    expect(form.get_by_test_id("privacy-locked")).to_be_visible()
    expect(form.get_by_test_id("privacy-locked")).to_contain_text("legal guardian")
    for name in ("read_receipts", "online_status"):
        box = form.locator(f"input[name={name}]")
        expect(box).to_be_disabled()
        expect(box).not_to_be_checked()
    # Enabled by hand (devtools), the box is refused by the server and put back. Once the
    # panel has drawn what the server holds: a draw after the tampering disabled it again.
    expect(form).to_have_attribute("data-state", "loaded")
    box = form.locator("input[name=online_status]")
    box.evaluate("el => { el.disabled = false; }")
    with u.expect_response(
        lambda r: r.url.endswith("/messaging/api/settings") and r.request.method == "PUT"
    ) as answer:
        box.click(force=True)
    assert answer.value.status == 403
    expect(box).not_to_be_checked()
    expect(u.get_by_test_id("ca-status")).to_contain_text("legal guardian")


def test_group_admin_renames_and_shares_admin_rights(live_asgi, new_context):
    pam = UserFactory(profile__nickname="Pam")
    rex = UserFactory(profile__nickname="Rex")
    p = open_callsapp(new_context(), live_asgi, pam)
    r = open_callsapp(new_context(), live_asgi, rex)
    create_group(p, "Book club", "rex")
    p.get_by_test_id("open-manage").click()
    p.fill("#ca-rename", "Night readers")
    p.get_by_test_id("manage-panel").locator("[data-form=rename] button[type=submit]").click()
    expect(r.get_by_test_id("room-list")).to_contain_text("Night readers", timeout=20000)
    # Rex is a plain member: no remove buttons for him until Pam makes him an admin.
    open_room(r, "Night readers")
    expect(r.get_by_test_id("timeline")).to_contain_text(
        'Pam named the group "Night readers"', timeout=20000
    )
    r.get_by_test_id("open-manage").click()
    expect(r.get_by_test_id("members").get_by_test_id("kick")).to_have_count(0)
    r.get_by_test_id("manage-panel").locator("[data-action=close-panel]").click()
    p.get_by_test_id("members").locator("li", has_text="Rex").locator("[data-action=admin]").click()
    expect(r.get_by_test_id("timeline")).to_contain_text(
        "Rex can now manage the group", timeout=20000
    )
    r.get_by_test_id("open-manage").click()
    expect(
        r.get_by_test_id("members").locator("li", has_text="Pam").get_by_test_id("kick")
    ).to_be_visible()


def test_the_manage_panel_shows_only_once_the_group_name_is_in_its_field(live_asgi, new_context):
    """Seen in CI: the panel opened before its field was filled, so a name typed at once got
    the current one put in front of it ("Book clubNight readers")."""
    pam = UserFactory(profile__nickname="Pam")
    UserFactory(profile__nickname="Rex")
    p = open_callsapp(new_context(), live_asgi, pam)
    create_group(p, "Book club", "rex")
    # What the field holds at the instant the panel becomes visible.
    p.evaluate(
        """() => {
          const panel = document.querySelector('[data-panel=manage]');
          window.renameAtShow = null;
          new MutationObserver(() => {
            if (!panel.hidden && window.renameAtShow === null) {
              window.renameAtShow = document.querySelector('#ca-rename').value;
            }
          }).observe(panel, { attributes: true, attributeFilter: ['hidden'] });
        }"""
    )
    p.get_by_test_id("open-manage").click()
    p.wait_for_function("() => window.renameAtShow !== null")
    assert p.evaluate("() => window.renameAtShow") == "Book club"
