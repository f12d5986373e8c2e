"""CallsApp bots (docs/protocols/callsapp.md, "Bots"): plain text, NOT end-to-end encrypted.
An owner makes a bot in the page and gets its token once; people find it by its exact
username and write to it; the bot reads their messages over the HTTP Bot API (long-polled
getUpdates, or a webhook) and answers with sendMessage, only to those who wrote first."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
import requests
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.utils import timezone
from requests.adapters import BaseAdapter, HTTPAdapter

from accounts.privacy import registry
from messaging import bot_webhook, bots
from messaging.keys import bot_webhook_lock_key, callsapp_user_group
from messaging.models import Bot, BotChat, BotMessage, BotUpdate
from messaging.tasks import bot_updates_purge
from realtime.events import capture_events
from realtime.redis import get_redis
from tests.factories import UserFactory
from tests.messaging.conftest import amember, sync_socket
from tests.messaging.test_api import UNDER_10, Browser
from tests.waiting import until_sync

pytestmark = pytest.mark.django_db

MINE = "/messaging/api/bots"
CHATS = "/messaging/api/bot-chats"
BOT_API = "/messaging/bot-api/"


def make_bot(b: Browser, username: str = "echo_bot", name: str = "Echo") -> tuple[dict, str]:
    made = b.ok("POST", MINE, {"username": username, "name": name, "description": "I echo"})
    token = made.pop("token")
    return made, str(token)


def refused(b: Browser, method: str, path: str, body: Any = None, status: int = 400) -> str:
    resp = b.call(method, path, body)
    assert resp.status_code == status, resp.content
    return str(resp.json()["error"])


def say(b: Browser, username: str, text: str) -> dict[str, Any]:
    return dict(b.ok("POST", f"{CHATS}/{username}/messages", {"text": text}))


def bot_call(token: str | None, method: str, params: Any = None, *, http: str = "POST") -> Any:
    """One Bot API call as a bot's HTTP library makes it (no cookies, no CSRF token)."""
    client = Client(enforce_csrf_checks=True)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if http == "GET":
        return client.get(BOT_API + method, params or {}, **headers)
    return client.post(
        BOT_API + method, json.dumps(params or {}), content_type="application/json", **headers
    )


def bot_ok(token: str, method: str, params: Any = None, **kw: Any) -> Any:
    resp = bot_call(token, method, params, **kw)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["ok"] is True
    return body["result"]


def bot_refused(token: str | None, method: str, params: Any, status: int) -> str:
    resp = bot_call(token, method, params)
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert body["ok"] is False and body["error_code"] == status and body["description"]
    return str(body["description"])


def texts(b: Browser, username: str) -> list[tuple[bool, str]]:
    view = b.ok("GET", f"{CHATS}/{username}")
    return [(m["from_bot"], m["text"]) for m in view["messages"]]


# --- making and managing bots


def test_an_owner_makes_a_bot_and_sees_its_token_once():
    ida = Browser()
    made, token = make_bot(ida)
    assert (made["username"], made["name"], made["description"]) == ("echo_bot", "Echo", "I echo")
    assert token.startswith(f"{made['bot_id']}:")
    listed = ida.ok("GET", MINE)["bots"]
    assert [b["username"] for b in listed] == ["echo_bot"]
    assert "token" not in listed[0] and token not in json.dumps(listed)
    # Only a hash is stored.
    stored = Bot.objects.get()
    assert token.split(":", 1)[1] not in json.dumps(
        {f.name: str(getattr(stored, f.attname)) for f in Bot._meta.concrete_fields}
    )
    me = bot_ok(token, "getMe")
    assert me == {
        "id": made["bot_id"],
        "is_bot": True,
        "username": "echo_bot",
        "first_name": "Echo",
    }


@pytest.mark.parametrize(
    ("username", "why"),
    [
        ("echo", "5"),  # too short
        ("a" * 30 + "bot", "32"),  # too long
        ("echo-bot", "letters"),
        ("echoer", "end"),
        ("ECHO_BOT", "taken"),  # any case
    ],
)
def test_a_username_must_be_valid_and_free(username: str, why: str):
    ida = Browser()
    make_bot(ida)
    error = refused(ida, "POST", MINE, {"username": username, "name": "X", "description": ""})
    assert why in error
    assert Bot.objects.count() == 1


def test_a_user_has_at_most_the_limit_of_bots(settings):
    settings.MESSAGING_BOTS_PER_USER = 2
    ida = Browser()
    make_bot(ida, "one_bot")
    make_bot(ida, "two_bot")
    assert "2" in refused(
        ida, "POST", MINE, {"username": "three_bot", "name": "3", "description": ""}, status=403
    )
    make_bot(Browser(), "three_bot")  # another owner's limit is theirs


def test_the_owner_edits_regenerates_the_token_and_others_cannot_touch_it():
    ida, eve = Browser(), Browser()
    made, old = make_bot(ida)
    bid = made["bot_id"]
    edited = ida.ok("PUT", f"{MINE}/{bid}", {"name": "Echo 2", "description": "Echoes more"})
    assert (edited["name"], edited["description"]) == ("Echo 2", "Echoes more")
    refused(eve, "PUT", f"{MINE}/{bid}", {"name": "Mine now", "description": ""}, status=404)
    refused(eve, "POST", f"{MINE}/{bid}/token", status=404)
    refused(eve, "DELETE", f"{MINE}/{bid}", status=404)

    new = ida.ok("POST", f"{MINE}/{bid}/token")["token"]
    assert new != old
    assert "Unauthorized" in bot_refused(old, "getMe", {}, 401)  # revoked at once
    assert bot_ok(new, "getMe")["first_name"] == "Echo 2"


def test_a_bad_or_missing_token_is_refused():
    ida = Browser()
    made, token = make_bot(ida)
    bid = made["bot_id"]
    for bad in (None, "nonsense", f"{bid}:wrong", f"{bid + 1}:{token.split(':', 1)[1]}"):
        bot_refused(bad, "getMe", {}, 401)
    assert bot_refused(token, "noSuchMethod", {}, 404)


def test_deleting_a_bot_deletes_its_chats_and_pending_updates():
    ida, oz = Browser(), Browser()
    made, token = make_bot(ida)
    say(oz, "echo_bot", "hi")
    assert BotUpdate.objects.count() == 1
    ida.ok("DELETE", f"{MINE}/{made['bot_id']}")
    assert not Bot.objects.exists() and not BotChat.objects.exists()
    assert not BotMessage.objects.exists() and not BotUpdate.objects.exists()
    bot_refused(token, "getMe", {}, 401)
    refused(oz, "GET", f"{CHATS}/echo_bot", status=404)


# --- chatting


def test_a_user_finds_a_bot_by_its_exact_username_and_the_bot_answers():
    ida, oz = Browser(), Browser(nickname="Oz")
    _, token = make_bot(ida)
    refused(oz, "GET", f"{CHATS}/echo", status=404)  # no directory: exact names only
    view = oz.ok("GET", f"{CHATS}/ECHO_BOT")  # any case
    assert (view["bot"]["username"], view["bot"]["name"]) == ("echo_bot", "Echo")
    assert view["messages"] == [] and view["blocked"] is False
    assert oz.ok("GET", CHATS)["chats"] == []  # opened, not started

    sent = say(oz, "echo_bot", "hello")
    assert (sent["from_bot"], sent["text"]) == (False, "hello")
    (update,) = bot_ok(token, "getUpdates")
    msg = update["message"]
    assert msg["text"] == "hello" and msg["chat"]["type"] == "private"
    assert msg["from"] == {"id": msg["chat"]["id"], "is_bot": False, "first_name": "Oz"}
    answer = bot_ok(token, "sendMessage", {"chat_id": msg["chat"]["id"], "text": "echo: hello"})
    assert answer["text"] == "echo: hello" and answer["chat"]["id"] == msg["chat"]["id"]

    assert texts(oz, "echo_bot") == [(False, "hello"), (True, "echo: hello")]
    (chat,) = oz.ok("GET", CHATS)["chats"]
    assert (chat["bot"]["username"], chat["last_text"]) == ("echo_bot", "echo: hello")


def test_get_updates_confirms_by_offset_and_deletes_what_is_below_it():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    for text in ("one", "two", "three"):
        say(oz, "echo_bot", text)
    first = bot_ok(token, "getUpdates", {"limit": 2})
    assert [u["message"]["text"] for u in first] == ["one", "two"]
    assert first[1]["update_id"] == first[0]["update_id"] + 1
    again = bot_ok(token, "getUpdates", {"offset": first[1]["update_id"] + 1})
    assert [u["message"]["text"] for u in again] == ["three"]
    assert BotUpdate.objects.count() == 1  # one and two were confirmed: deleted
    # GET with query parameters works too.
    same = bot_ok(token, "getUpdates", {"offset": again[0]["update_id"]}, http="GET")
    assert [u["message"]["text"] for u in same] == ["three"]
    assert bot_ok(token, "getUpdates", {"offset": again[0]["update_id"] + 1}) == []
    assert not BotUpdate.objects.exists()
    # The history stays: confirmed updates are not the chat.
    assert len(texts(oz, "echo_bot")) == 3


def test_a_bot_cannot_write_first_nor_to_another_bots_chat():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    _, other = make_bot(ida, "other_bot")
    say(oz, "other_bot", "hi other")
    (update,) = bot_ok(other, "getUpdates")
    chat_id = update["message"]["chat"]["id"]
    assert "initiate" in bot_refused(token, "sendMessage", {"chat_id": chat_id, "text": "x"}, 403)
    bot_refused(token, "sendMessage", {"chat_id": 999999, "text": "spam"}, 403)
    assert not BotMessage.objects.filter(text__in=["x", "spam"]).exists()


def test_oversize_or_empty_text_is_refused_on_both_sides():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    refused(oz, "POST", f"{CHATS}/echo_bot/messages", {"text": "x" * 4097})
    say(oz, "echo_bot", "hi")
    chat_id = bot_ok(token, "getUpdates")[0]["message"]["chat"]["id"]
    assert "too long" in bot_refused(
        token, "sendMessage", {"chat_id": chat_id, "text": "x" * 4097}, 400
    )
    bot_refused(token, "sendMessage", {"chat_id": chat_id, "text": ""}, 400)
    bot_refused(token, "sendMessage", {"chat_id": chat_id}, 400)
    assert BotMessage.objects.count() == 1


def test_a_send_flood_is_refused_with_429_and_others_still_get_theirs(settings):
    settings.MESSAGING_BOT_SEND_CAPACITY = 3
    settings.MESSAGING_BOT_SEND_PER_SECOND = 0.001
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    _, calm = make_bot(ida, "calm_bot")
    say(oz, "echo_bot", "hi")
    say(oz, "calm_bot", "hi")
    updates = {u["message"]["text"]: u for u in bot_ok(token, "getUpdates")}
    chat_id = updates["hi"]["message"]["chat"]["id"]
    for i in range(3):
        bot_ok(token, "sendMessage", {"chat_id": chat_id, "text": f"flood {i}"})
    resp = bot_call(token, "sendMessage", {"chat_id": chat_id, "text": "flood 3"})
    assert resp.status_code == 429
    assert resp.json()["parameters"]["retry_after"] >= 1
    calm_chat = bot_ok(calm, "getUpdates")[0]["message"]["chat"]["id"]
    bot_ok(calm, "sendMessage", {"chat_id": calm_chat, "text": "still here"})
    assert not BotMessage.objects.filter(text="flood 3").exists()


def test_a_user_blocks_a_bot_and_it_can_no_longer_write_to_them():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    say(oz, "echo_bot", "hi")
    chat_id = bot_ok(token, "getUpdates")[0]["message"]["chat"]["id"]
    assert oz.ok("PUT", f"{CHATS}/echo_bot/block", {"blocked": True})["blocked"] is True
    assert "blocked" in bot_refused(token, "sendMessage", {"chat_id": chat_id, "text": "x"}, 403)
    refused(oz, "POST", f"{CHATS}/echo_bot/messages", {"text": "hi again"}, status=403)
    oz.ok("PUT", f"{CHATS}/echo_bot/block", {"blocked": False})
    bot_ok(token, "sendMessage", {"chat_id": chat_id, "text": "welcome back"})


def test_a_user_deletes_the_chat_and_its_pending_updates_go_with_it():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    say(oz, "echo_bot", "hi")
    chat_id = bot_ok(token, "getUpdates")[0]["message"]["chat"]["id"]
    say(oz, "echo_bot", "are you there?")
    oz.ok("DELETE", f"{CHATS}/echo_bot")
    assert not BotChat.objects.exists() and not BotMessage.objects.exists()
    assert bot_ok(token, "getUpdates") == []
    # Gone for the bot too: it cannot write until they write again.
    bot_refused(token, "sendMessage", {"chat_id": chat_id, "text": "hello?"}, 403)
    assert oz.ok("GET", CHATS)["chats"] == []


def test_messages_are_pushed_live_to_the_users_callsapp_sockets(django_capture_on_commit_callbacks):
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    with capture_events() as seen, django_capture_on_commit_callbacks(execute=True):
        say(oz, "echo_bot", "hi")
        chat_id = bot_ok(token, "getUpdates")[0]["message"]["chat"]["id"]
        bot_ok(token, "sendMessage", {"chat_id": chat_id, "text": "hi yourself"})
    frames = [p["frame"] for g, p in seen if g == callsapp_user_group(oz.user.pk)]
    assert [(f["type"], f["bot"], f["message"]["text"]) for f in frames] == [
        ("bot.message", "echo_bot", "hi"),  # to their other pages
        ("bot.message", "echo_bot", "hi yourself"),
    ]
    assert not any(g == callsapp_user_group(ida.user.pk) for g, _ in seen)


@pytest.mark.django_db(transaction=True)
async def test_the_reply_reaches_the_users_callsapp_socket():
    oz = await amember()
    owner = await sync_to_async(UserFactory)()
    bot, _ = await sync_to_async(bots.bot_create)(
        owner=owner, username="live_bot", name="Live", description=""
    )
    await sync_to_async(bots.user_message_send)(user=oz.user, username="live_bot", text="hi")
    chat = await sync_to_async(BotChat.objects.get)()
    comm = await sync_socket(oz)
    try:
        await sync_to_async(bots.bot_message_send)(bot=bot, chat_id=chat.pk, text="Is this live?")
        frame = await comm.receive_json_from(timeout=5)
        assert frame["type"] == "bot.message" and frame["bot"] == "live_bot"
        assert (frame["message"]["from_bot"], frame["message"]["text"]) == (True, "Is this live?")
    finally:
        await comm.disconnect()


# --- long polling


def test_get_updates_waits_without_reading_the_database_in_a_loop(queries):
    ida = Browser()
    _, token = make_bot(ida)
    queries.clear()
    started = time.monotonic()
    assert bot_ok(token, "getUpdates", {"timeout": 1}) == []
    assert time.monotonic() - started >= 0.9  # it did wait
    # The token, the confirmation and one read before the wait, one read after it.
    assert len(queries) <= 5, queries


def test_the_timeout_is_capped(settings):
    settings.MESSAGING_BOT_POLL_MAX_SECONDS = 1
    ida = Browser()
    _, token = make_bot(ida)
    started = time.monotonic()
    assert bot_ok(token, "getUpdates", {"timeout": 600}) == []
    assert time.monotonic() - started < 10


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_returns_as_soon_as_a_message_arrives():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    answers: list[Any] = []

    def poll() -> None:
        try:
            answers.append(bot_ok(token, "getUpdates", {"timeout": 20}))
        finally:
            connection.close()

    waiting = threading.Thread(target=poll)
    started = time.monotonic()
    waiting.start()
    # The poll is waiting (it has subscribed) before the message is sent: a wake-up sent
    # before the wait began would prove nothing.
    until_sync(lambda: bots.poll_waiting(Bot.objects.get().pk), 10, "the poll waiting")
    say(oz, "echo_bot", "wake up")
    waiting.join(timeout=15)
    assert not waiting.is_alive()
    assert [u["message"]["text"] for u in answers[0]] == ["wake up"]
    assert time.monotonic() - started < 15  # well before its 20 s


@pytest.mark.django_db(transaction=True)
def test_a_poll_waiting_with_a_token_revoked_meanwhile_gets_nothing():
    """A stolen token's poll that was already waiting when the owner made a new token gets
    a 401, not the next message."""
    ida, oz = Browser(), Browser()
    made, old = make_bot(ida)
    answers: list[Any] = []

    def poll() -> None:
        try:
            answers.append(bot_call(old, "getUpdates", {"timeout": 20}))
        finally:
            connection.close()

    waiting = threading.Thread(target=poll)
    waiting.start()
    until_sync(lambda: bots.poll_waiting(made["bot_id"]), 10, "the poll waiting")
    new = ida.ok("POST", f"{MINE}/{made['bot_id']}/token")["token"]
    say(oz, "echo_bot", "for the owner's eyes")
    waiting.join(timeout=15)
    assert not waiting.is_alive()
    assert answers[0].status_code == 401 and answers[0].json()["ok"] is False
    assert [u["message"]["text"] for u in bot_ok(new, "getUpdates")] == ["for the owner's eyes"]


def test_a_users_flood_of_messages_to_bots_is_refused(settings):
    settings.MESSAGING_BOT_SEND_CAPACITY = 2
    settings.MESSAGING_BOT_SEND_PER_SECOND = 0.001
    ida, oz, eve = Browser(), Browser(), Browser()
    _, token = make_bot(ida)
    say(oz, "echo_bot", "one")
    say(oz, "echo_bot", "two")
    refused(oz, "POST", f"{CHATS}/echo_bot/messages", {"text": "three"}, status=429)
    say(eve, "echo_bot", "eve's turn")  # others still write
    texts_seen = [u["message"]["text"] for u in bot_ok(token, "getUpdates")]
    assert texts_seen == ["one", "two", "eve's turn"]


# --- webhooks


class FakeTransport(BaseAdapter):
    """The bot's server, at the transport of the webhook sender's HTTP session."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        resp = requests.Response()
        resp.status_code = self.statuses.pop(0) if self.statuses else 200
        resp._content = b"{}"
        resp.request = request
        resp.url = request.url or ""
        return resp

    def close(self) -> None:
        pass


@pytest.fixture
def bot_server() -> Any:
    fake = FakeTransport()
    bot_webhook.http.mount("https://", fake)
    yield fake
    bot_webhook.http.mount("https://", HTTPAdapter())


PUBLIC_HOOK = "https://93.184.215.14/hook"


def test_a_webhook_gets_each_update_with_the_secret_and_it_is_then_deleted(
    bot_server, django_capture_on_commit_callbacks
):
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    assert bot_ok(token, "setWebhook", {"url": PUBLIC_HOOK, "secret_token": "s3cret_1"}) is True
    assert bot_ok(token, "getWebhookInfo")["url"] == PUBLIC_HOOK
    with django_capture_on_commit_callbacks(execute=True):
        say(oz, "echo_bot", "via hook")
    (sent,) = bot_server.seen
    assert sent.url == PUBLIC_HOOK and sent.method == "POST"
    assert sent.headers["X-CallsApp-Bot-Api-Secret-Token"] == "s3cret_1"
    assert json.loads(sent.body or b"")["message"]["text"] == "via hook"
    assert not BotUpdate.objects.exists()  # delivered: confirmed
    # While a webhook is set getUpdates is refused, as Telegram does.
    bot_refused(token, "getUpdates", {}, 409)
    assert bot_ok(token, "deleteWebhook") is True
    assert bot_ok(token, "getUpdates") == []


def test_a_failing_webhook_is_retried_with_backoff_and_keeps_the_update(
    bot_server, django_capture_on_commit_callbacks
):
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    bot_ok(token, "setWebhook", {"url": PUBLIC_HOOK})
    bot_server.statuses = [500, 502]
    with django_capture_on_commit_callbacks(execute=True):
        say(oz, "echo_bot", "retry me")
    # Eager tasks retry at once: two failures, then delivered.
    assert len(bot_server.seen) == 3
    assert "X-CallsApp-Bot-Api-Secret-Token" not in bot_server.seen[0].headers
    assert not BotUpdate.objects.exists()
    assert [bot_webhook.backoff_seconds(n) for n in range(4)] == [5, 10, 20, 40]

    # Down for good: the update waits (for a later try or the 14-day purge), not lost.
    bot_server.statuses = [503] * 50
    with django_capture_on_commit_callbacks(execute=True):
        say(oz, "echo_bot", "nobody home")
    assert BotUpdate.objects.get().message.text == "nobody home"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.215.14/hook", "https"),
        ("https://127.0.0.1/hook", "public"),
        ("https://10.1.2.3/hook", "public"),
        ("https://169.254.169.254/latest", "public"),
        ("https://[::1]/hook", "public"),
        ("https:///nohost", "host"),
        ("ftp://93.184.215.14/", "https"),
    ],
)
def test_a_webhook_must_be_https_to_a_public_address(url: str, why: str):
    ida = Browser()
    _, token = make_bot(ida)
    assert why in bot_refused(token, "setWebhook", {"url": url}, 400)
    assert Bot.objects.get().webhook_url == ""


def test_a_webhook_secret_has_telegrams_alphabet():
    ida = Browser()
    _, token = make_bot(ida)
    bot_refused(token, "setWebhook", {"url": PUBLIC_HOOK, "secret_token": "no spaces"}, 400)


def test_delivery_rechecks_the_address_and_refuses_a_private_one(
    bot_server, django_capture_on_commit_callbacks
):
    """DNS may change after setWebhook: each delivery resolves the host again."""
    ida, oz = Browser(), Browser()
    make_bot(ida)
    Bot.objects.update(webhook_url="https://10.0.0.7/hook")  # as if its name now said so
    with django_capture_on_commit_callbacks(execute=True):
        say(oz, "echo_bot", "hi")
    assert bot_server.seen == []
    assert BotUpdate.objects.count() == 1


def test_one_worker_at_a_time_delivers_a_bots_updates_and_the_other_tries_later(bot_server):
    ida, oz = Browser(), Browser()
    make_bot(ida)
    bot = Bot.objects.get()
    Bot.objects.update(webhook_url=PUBLIC_HOOK)
    say(oz, "echo_bot", "in order")  # not committed here: no task ran
    busy = get_redis().lock(bot_webhook_lock_key(bot.pk), timeout=30)
    assert busy.acquire()
    assert bots.bot_webhook_deliver(bot_id=bot.pk) is False  # its task retries later
    assert bot_server.seen == []
    busy.release()
    assert bots.bot_webhook_deliver(bot_id=bot.pk) is True
    assert len(bot_server.seen) == 1 and not BotUpdate.objects.exists()


# --- retention, privacy, staff


def test_pending_updates_are_deleted_after_14_days_and_the_history_stays(settings):
    settings.MESSAGING_RETENTION_DAYS = 14
    ida, oz = Browser(), Browser()
    make_bot(ida)
    say(oz, "echo_bot", "old")
    now = timezone.now()
    # Time moves on: at 13 days the update waits still; past 14 it is deleted.
    assert bots.bot_updates_purge(now=now + dt.timedelta(days=13)) == {"deleted": 0}
    assert bots.bot_updates_purge(now=now + dt.timedelta(days=14, minutes=1)) == {"deleted": 1}
    assert not BotUpdate.objects.exists()
    # The beat's task, today: a fresh update stays.
    say(oz, "echo_bot", "new")
    assert bot_updates_purge() == {"deleted": 0}
    assert [u.message.text for u in BotUpdate.objects.all()] == ["new"]
    # The history is the user's to delete, not the purge's.
    assert [t for _, t in texts(oz, "echo_bot")] == ["old", "new"]


def test_the_purge_task_is_in_the_beat_schedule():
    from config.celery_app import app

    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "messaging.tasks.bot_updates_purge" in tasks


def test_export_holds_the_users_bot_chats_and_bots_but_no_token_hash():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    say(oz, "echo_bot", "my words")
    chat_id = bot_ok(token, "getUpdates")[0]["message"]["chat"]["id"]
    bot_ok(token, "sendMessage", {"chat_id": chat_id, "text": "its words"})
    step = registry.step_of("messaging")
    assert step is not None

    oz_part = step.export(user_id=oz.user.pk).collections
    (chat,) = oz_part["callsapp_bot_chats"]
    assert chat["bot"] == "echo_bot"
    assert [(m["from"], m["text"]) for m in chat["messages"]] == [
        ("you", "my words"),
        ("bot", "its words"),
    ]
    ida_part = step.export(user_id=ida.user.pk).collections
    (owned,) = ida_part["callsapp_bots"]
    assert (owned["username"], owned["chats"]) == ("echo_bot", 1)
    dumped = json.dumps(ida_part, default=str) + json.dumps(oz_part, default=str)
    assert Bot.objects.get().token_hash not in dumped
    assert token.split(":", 1)[1] not in dumped


def test_deleting_an_account_deletes_its_bots_and_its_bot_chats():
    ida, oz, eve = Browser(), Browser(), Browser()
    make_bot(ida)
    _, eves = make_bot(eve, "eves_bot")
    say(oz, "echo_bot", "to ida's bot")
    say(ida, "eves_bot", "ida writes to eve's bot")
    say(oz, "eves_bot", "oz writes to eve's bot")
    step = registry.step_of("messaging")
    assert step is not None
    step.delete(user_id=ida.user.pk)
    assert list(Bot.objects.values_list("username", flat=True)) == ["eves_bot"]
    assert [u["message"]["text"] for u in bot_ok(eves, "getUpdates")] == ["oz writes to eve's bot"]
    assert list(BotMessage.objects.values_list("text", flat=True)) == ["oz writes to eve's bot"]


def test_a_closed_accounts_bots_stop_at_once():
    ida, oz = Browser(), Browser()
    _, token = make_bot(ida)
    say(oz, "echo_bot", "hi")
    type(ida.user).objects.filter(pk=ida.user.pk).update(deletion_requested_at=timezone.now())
    bot_refused(token, "getMe", {}, 401)
    refused(oz, "GET", f"{CHATS}/echo_bot", status=404)


def test_an_account_under_the_age_rule_is_refused():
    young = Browser(**UNDER_10)
    assert young.call("GET", MINE).status_code == 403
    assert young.call("GET", CHATS).status_code == 403


def test_staff_list_bots_without_their_token_hash(client):
    ida = Browser()
    make_bot(ida)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get("/admin/messaging/bot/").content.decode()
    assert "echo_bot" in page
    bot = Bot.objects.get()
    detail = client.get(f"/admin/messaging/bot/{bot.pk}/change/").content.decode()
    assert "echo_bot" in detail and bot.token_hash not in detail
    assert client.post(f"/admin/messaging/bot/{bot.pk}/change/", {}).status_code == 403
