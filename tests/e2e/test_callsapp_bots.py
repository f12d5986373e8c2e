"""CallsApp's bots in real browsers, with a real bot program: Ida makes a bot in the page and
copies its token; a Python bot (this test's thread) long-polls the HTTP Bot API of the live
server and echoes; Oz, on a phone, finds the bot by its username, writes "hello" and sees
the answer arrive live. Bot chats are plain text (not end-to-end encrypted), and say so."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from messaging.models import BotChat, BotMessage
from tests.e2e.test_callsapp import VAR, open_callsapp
from tests.factories import UserFactory

pytestmark = pytest.mark.e2e

NOT_E2E = "Not end-to-end encrypted: this bot and its owner can read these messages"


class EchoBot(threading.Thread):
    """A bot program as its author would write it: getUpdates (long poll) and sendMessage
    over HTTP, the token in the Authorization header."""

    def __init__(self, server_url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.api = f"{server_url}/messaging/bot-api/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.stop = threading.Event()
        self.replied = threading.Event()
        self.errors: list[str] = []

    def call(self, method: str, **params: Any) -> Any:
        resp = self.http.post(self.api + method, json=params, timeout=30)
        body = resp.json()
        if not body["ok"]:
            raise RuntimeError(f"{method}: {resp.status_code} {body['description']}")
        return body["result"]

    def run(self) -> None:
        offset = 0
        try:
            while not self.stop.is_set():
                for update in self.call("getUpdates", offset=offset, timeout=5):
                    offset = update["update_id"] + 1
                    msg = update["message"]
                    self.call("sendMessage", chat_id=msg["chat"]["id"], text=f"echo: {msg['text']}")
                    self.replied.set()
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))


def open_bots(page: Page) -> None:
    page.get_by_test_id("open-bots").click()
    expect(page.get_by_test_id("bots-panel")).to_be_visible()


def test_a_bot_made_in_the_page_answers_a_user_live(live_asgi, new_context):
    ida = UserFactory(profile__nickname="Ida")
    oz = UserFactory(profile__nickname="Oz")
    i_ctx = new_context(
        viewport={"width": 1280, "height": 860}, permissions=["clipboard-read", "clipboard-write"]
    )
    i = open_callsapp(i_ctx, live_asgi, ida)
    o = open_callsapp(new_context(viewport={"width": 390, "height": 844}), live_asgi, oz)

    # Ida makes a bot and copies its token, shown this once.
    open_bots(i)
    i.get_by_test_id("new-bot").click()
    form = i.get_by_test_id("new-bot-form")
    form.locator("[name=username]").fill("Echo_e2e_bot")
    form.locator("[name=name]").fill("Echo")
    form.locator("[name=description]").fill("Says it again")
    form.locator("button[type=submit]").click()
    expect(i.get_by_test_id("bot-token-box")).to_be_visible()
    expect(i.get_by_test_id("my-bot")).to_contain_text("@Echo_e2e_bot")
    i.get_by_test_id("bot-token-copy").click()
    expect(i.get_by_test_id("bot-token-copy")).to_have_text("Copied")
    token = i.evaluate("navigator.clipboard.readText()")
    assert token == i.get_by_test_id("bot-token").text_content()
    i.screenshot(path=str(VAR / "e2e-callsapp-bots.png"))
    i.get_by_test_id("bot-token-hide").click()
    expect(i.get_by_test_id("bot-token-box")).to_be_hidden()

    bot = EchoBot(live_asgi.url, token)
    bot.start()
    try:
        # Oz, on a phone, finds it by its exact username (any case) and writes to it.
        open_bots(o)
        o.screenshot(path=str(VAR / "e2e-callsapp-bots-phone.png"))
        o.fill("#ca-find-bot", "echo_E2E_bot")
        o.get_by_test_id("find-bot-form").locator("button[type=submit]").click()
        chat = o.get_by_test_id("bot-chat")
        expect(chat.get_by_test_id("bot-chat-name")).to_have_text("Echo")
        expect(chat.get_by_test_id("bot-chat-badge")).to_have_text("bot")
        expect(chat.get_by_test_id("bot-not-e2e")).to_have_text(NOT_E2E)
        chat.get_by_test_id("bot-input").fill("hello")
        chat.get_by_test_id("bot-input").press("Enter")
        expect(chat.get_by_test_id("bot-mine")).to_contain_text("hello")
        reply = chat.get_by_test_id("bot-reply")
        expect(reply).to_contain_text("echo: hello", timeout=20000)
        # The page may show the reply before the bot has read sendMessage's answer.
        assert bot.replied.wait(timeout=10), bot.errors
        o.screenshot(path=str(VAR / "e2e-callsapp-bot-chat-phone.png"))
    finally:
        bot.stop.set()
        bot.join(timeout=10)
    assert not bot.errors, bot.errors

    # In the chat list with its badge; reopened, the history is read from the server.
    chat.locator("[data-action=close-panel]").click()
    item = o.get_by_test_id("bot-chat-list").get_by_test_id("bot-chat-item")
    expect(item).to_contain_text("Echo")
    expect(item.get_by_test_id("bot-badge")).to_have_text("bot")
    expect(item).to_contain_text("echo: hello")
    o.screenshot(path=str(VAR / "e2e-callsapp-bot-list-phone.png"))
    o.reload()
    expect(o.get_by_test_id("callsapp")).to_have_attribute("data-state", "ready", timeout=30000)
    o.get_by_test_id("bot-chat-list").get_by_test_id("bot-chat-item").click()
    expect(chat.get_by_test_id("bot-mine")).to_contain_text("hello")
    expect(chat.get_by_test_id("bot-reply")).to_contain_text("echo: hello")
    assert list(BotMessage.objects.order_by("pk").values_list("from_bot", "text")) == [
        (False, "hello"),
        (True, "echo: hello"),
    ]

    # Oz stops the bot (it can no longer write to him), restarts it, then deletes the chat:
    # gone from his list and from the server.
    chat.get_by_test_id("bot-block").click()
    expect(chat.get_by_test_id("bot-blocked")).to_be_visible()
    expect(chat.get_by_test_id("bot-composer")).to_be_hidden()
    assert BotChat.objects.get().blocked
    chat.get_by_test_id("bot-block").click()
    expect(chat.get_by_test_id("bot-composer")).to_be_visible()
    o.once("dialog", lambda dialog: dialog.accept())
    chat.get_by_test_id("bot-chat-delete").click()
    expect(o.get_by_test_id("bots-panel")).to_be_visible()
    expect(o.get_by_test_id("bot-chat-list").get_by_test_id("bot-chat-item")).to_have_count(0)
    assert not BotChat.objects.exists() and not BotMessage.objects.exists()
