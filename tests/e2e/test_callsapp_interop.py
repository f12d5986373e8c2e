"""Interop and protocol edges: an independent device written with Python `vodozemac` talks to
the browser through the real server, both ways; and the browser refuses a replayed or a
tampered ciphertext with a clear message instead of showing it (or a blank)."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from tests.e2e.test_callsapp import open_callsapp, send, start_chat
from tests.factories import UserFactory
from tests.messaging.pydevice import PyDevice, b64, unb64

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery"


def test_python_vodozemac_and_the_browser_understand_each_other(live_asgi, new_context):
    gus = UserFactory(profile__nickname="Gus")
    pyro = UserFactory(profile__nickname="Pyro")
    page = open_callsapp(new_context(), live_asgi, gus)
    py = PyDevice(live_asgi.url, pyro.email, PASSWORD)
    py.upload_keys()

    # Browser -> Python: the browser claims the Python device's one-time key, sends it the
    # room key over Olm, then the message over Megolm; vodozemac decrypts both.
    start_chat(page, "pyro")
    send(page, "hello from the browser")
    py.sync(
        until=lambda d: any(
            m["content"].get("body") == "hello from the browser" for m in d.room_messages
        )
    )
    assert py.to_device[0]["type"] == "m.room_key"
    assert py.to_device[0]["sender"] == page.evaluate("window.callsapp.userId")

    # Python -> browser: an Olm to-device message (the room key) and a Megolm room message.
    room_id = page.evaluate("window.callsapp.openRoom")
    py.share_room_key(room_id, [page.evaluate("window.callsapp.userId")])
    py.send_room_message(room_id, "hello from vodozemac")
    expect(page.locator(".ca-msg.theirs", has_text="hello from vodozemac")).to_be_visible(
        timeout=20000
    )
    expect(page.get_by_test_id("undecryptable")).to_have_count(0)


def test_replayed_and_tampered_ciphertexts_are_refused(live_asgi, new_context):
    hal = UserFactory(profile__nickname="Hal")
    mallory = UserFactory(profile__nickname="Mallory")
    page = open_callsapp(new_context(), live_asgi, hal)
    py = PyDevice(live_asgi.url, mallory.email, PASSWORD)
    py.upload_keys()
    start_chat(page, "mallory")
    send(page, "hi")
    room_id = page.evaluate("window.callsapp.openRoom")
    py.share_room_key(room_id, [page.evaluate("window.callsapp.userId")])

    content = py.megolm_content(room_id, {"msgtype": "m.text", "body": "pay 10 to Hal"})
    py.api("PUT", f"rooms/{room_id}/send/m.room.encrypted/{uuid.uuid4().hex}", content)
    expect(page.locator(".ca-msg.theirs", has_text="pay 10 to Hal")).to_have_count(1, timeout=20000)

    # The same ciphertext again, as a new event: refused as a replay, shown once only.
    py.api("PUT", f"rooms/{room_id}/send/m.room.encrypted/{uuid.uuid4().hex}", content)
    refused = page.get_by_test_id("undecryptable")
    expect(refused).to_have_count(1, timeout=20000)
    expect(refused.first).to_contain_text("replay")
    expect(page.locator(".ca-msg.theirs", has_text="pay 10 to Hal")).to_have_count(1)

    # One flipped bit in a fresh ciphertext: the signature check fails, nothing is shown.
    forged = py.megolm_content(room_id, {"msgtype": "m.text", "body": "pay 99 to Mallory"})
    raw = bytearray(unb64(forged["ciphertext"]))
    raw[12] ^= 0x01
    forged["ciphertext"] = b64(bytes(raw))
    py.api("PUT", f"rooms/{room_id}/send/m.room.encrypted/{uuid.uuid4().hex}", forged)
    expect(refused).to_have_count(2, timeout=20000)
    expect(refused.nth(1)).to_contain_text("tampered")
    expect(page.locator(".ca-msg", has_text="pay 99")).to_have_count(0)


def test_a_message_whose_room_key_comes_late_says_so_then_shows(live_asgi, new_context):
    ula = UserFactory(profile__nickname="Ula")
    vic = UserFactory(profile__nickname="Vic")
    page = open_callsapp(new_context(), live_asgi, ula)
    py = PyDevice(live_asgi.url, vic.email, PASSWORD)
    py.upload_keys()
    start_chat(page, "vic")
    send(page, "hi Vic")
    room_id = page.evaluate("window.callsapp.openRoom")
    ula_id = page.evaluate("window.callsapp.userId")

    # Vic's device sends the message first; its Megolm key is still on its way.
    py.new_room_session(room_id)
    py.send_room_message(room_id, "the key follows this message")
    waiting = page.get_by_test_id("undecryptable")
    expect(waiting).to_have_count(1, timeout=20000)
    expect(waiting).to_contain_text("has not arrived on this device (yet)")
    expect(page.locator(".ca-msg", has_text="the key follows")).to_have_count(0)

    # The key arrives: the waiting message is decrypted again and shown in its place.
    py.send_room_key(room_id, [ula_id])
    expect(page.locator(".ca-msg.theirs", has_text="the key follows this message")).to_be_visible(
        timeout=20000
    )
    expect(page.get_by_test_id("undecryptable")).to_have_count(0)
    # The retry is kept: after a reload it is still the message, not the waiting text.
    page.reload()
    expect(page.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    page.get_by_test_id("room-list").locator("li", has_text="Vic").get_by_test_id("room").click()
    expect(page.locator(".ca-msg.theirs", has_text="the key follows this message")).to_be_visible(
        timeout=20000
    )
    expect(page.get_by_test_id("undecryptable")).to_have_count(0)
