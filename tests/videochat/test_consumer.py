"""The video chat socket on the real ASGI app (origin check, session auth) and real Redis:
matching, signalling only between partners, Next, disconnects, chat and translation, and
who is refused at the door."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.utils import timezone

from realtime.redis import get_redis
from tests.conftest import acommunicator
from tests.factories import grant_premium
from tests.videochat.clock import advance_matchmaking_clock, waiting_deadline_ahead
from tests.videochat.helpers import (
    WS,
    close_all,
    connect,
    join,
    pair,
    ready,
)
from tests.videochat.libretranslate import libretranslate_server
from tests.waiting import until
from videochat import matchmaking as mm
from videochat.models import Ban

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = 0.3  # seconds a socket must stay silent to prove nothing leaked to it
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
ICE = {
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def entitle(user) -> None:  # type: ignore[no-untyped-def]
    await sync_to_async(grant_premium)(user)


async def expect_error(comm, code: str) -> dict:  # type: ignore[no-untyped-def]
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "error" and frame["code"] == code, frame
    return frame


# --- matching
async def test_pair_gets_match_found_with_opposite_roles_and_public_cards(amake_user):
    alice = await amake_user(profile__nickname="alice")
    bob = await amake_user(profile__nickname="bob")
    a, _ = await ready(alice, gender="f", language="de", translate_to="")
    b, _ = await ready(bob, gender="m", language="ru", translate_to="")
    found_a, found_b = await pair(a, b)
    assert found_a["match_id"] == found_b["match_id"]
    assert found_b["role"] == "offer" and found_a["role"] == "answer"
    assert found_a["partner"] == {
        "country": "",
        "country_name": "",
        "flag": "",
        "gender": "m",
        "language": "ru",
        "name": "bob",
    }
    assert found_b["partner"]["name"] == "alice" and found_b["partner"]["gender"] == "f"
    # Nothing that identifies the account travels to the partner.
    assert set(found_b["partner"]) == {
        "country",
        "country_name",
        "flag",
        "gender",
        "language",
        "name",
    }
    assert alice.email not in str(found_b)
    await close_all(a, b)


async def test_country_from_ip_only_through_trusted_proxies(amake_user, settings):
    settings.VIDEOCHAT_TRUSTED_PROXIES = ["10.0.0.0/8"]

    async def sock(user, peer: str, xff: str):  # type: ignore[no-untyped-def]
        comm = await acommunicator(WS, user, headers=[(b"x-forwarded-for", xff.encode())])
        comm.scope["client"] = (peer, 40000)
        ok, _ = await comm.connect()
        assert ok
        await comm.send_json_to({"type": "hello"})
        return comm, await comm.receive_json_from(timeout=3)

    # Behind our proxy: the right-most address the proxy saw (the client's own claim to the
    # left is ignored).
    a, ready_a = await sock(await amake_user(), "10.1.2.3", "8.8.8.8, 5.255.255.5")
    assert ready_a["me"] == {"country": "RU", "country_name": "Russian Federation", "flag": "🇷🇺"}
    # Straight from the internet: the header is the client's word and is ignored.
    b, ready_b = await sock(await amake_user(), "8.8.4.4", "5.255.255.5")
    assert ready_b["me"]["country"] == "US"
    found_a, found_b = await pair(a, b)
    assert found_b["partner"]["country"] == "RU" and found_b["partner"]["flag"] == "🇷🇺"
    assert found_a["partner"]["country"] == "US"
    # Loopback has no country.
    c = await acommunicator(WS, await amake_user())
    c.scope["client"] = ("127.0.0.1", 40001)
    await c.connect()
    await c.send_json_to({"type": "hello"})
    assert (await c.receive_json_from(timeout=3))["me"]["country"] == ""
    await close_all(a, b, c)


async def test_filters_refused_without_entitlement(amake_user):
    comm = await connect(await amake_user())
    await comm.send_json_to({"type": "hello", "want_gender": "f"})
    await expect_error(comm, "filters_not_allowed")
    await comm.send_json_to({"type": "hello", "want_country": "DE"})
    await expect_error(comm, "filters_not_allowed")
    await comm.send_json_to({"type": "queue.join"})
    await expect_error(comm, "hello_required")  # the refused hello set nothing
    await comm.send_json_to({"type": "hello"})
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "ready" and frame["filters_allowed"] is False
    await comm.disconnect()


async def test_a_refund_announced_by_payments_drops_the_filters_at_the_next_entry(amake_user):
    """The socket hears payments' own announcement (the group the payments page listens
    on), so filters remembered from hello end with the refund, not at the next hello."""
    from payments.events import EntitlementsChanged
    from payments.keys import entitlements_group
    from payments.models import Entitlement
    from realtime.events import send_on_commit

    user = await amake_user()
    await entitle(user)
    comm, _ = await ready(user, gender="m", want_gender="f")
    assert (await join(comm))["type"] == "queue.waiting"
    await comm.send_json_to({"type": "queue.leave"})
    assert (await comm.receive_json_from(timeout=3))["type"] == "queue.left"

    def refund() -> None:  # what payments does when a refund lands
        Entitlement.objects.filter(user=user).update(revoked_at=timezone.now())
        send_on_commit(entitlements_group(user.pk), EntitlementsChanged(features=[]))

    await sync_to_async(refund)()
    # The announcement crosses the channel layer while our frames come straight in: enter
    # until an entry has heard it (each one before it keeps the filters, as it should).
    for _ in range(50):
        frame = await join(comm)
        if frame["type"] == "error":
            break
        assert frame["type"] == "queue.waiting", frame
        await comm.send_json_to({"type": "queue.leave"})
        assert (await comm.receive_json_from(timeout=3))["type"] == "queue.left"
    assert frame["code"] == "filters_not_allowed", frame
    assert (await comm.receive_json_from(timeout=3))["type"] == "queue.waiting"
    await comm.disconnect()


async def test_gender_filter_respected_with_entitlement(amake_user):
    picky_user = await amake_user()
    await entitle(picky_user)
    picky, ready_frame = await ready(picky_user, gender="m", want_gender="f")
    assert ready_frame["filters_allowed"] is True
    assert (await join(picky))["type"] == "queue.waiting"
    man, _ = await ready(await amake_user(), gender="m")
    assert (await join(man))["type"] == "queue.waiting"  # not what picky wants
    woman, _ = await ready(await amake_user(), gender="f")
    found = await join(woman)
    assert found["type"] == "match.found"
    assert (await picky.receive_json_from(timeout=3))["match_id"] == found["match_id"]
    assert await man.receive_nothing(QUIET)
    await close_all(picky, man, woman)


async def test_country_filter_respected_with_entitlement(amake_user, settings):
    settings.VIDEOCHAT_COUNTRY_RESOLVER = "tests.videochat.test_consumer.country_by_first_octet"
    picky_user = await amake_user()
    await entitle(picky_user)
    picky = await acommunicator(WS, picky_user)
    picky.scope["client"] = ("1.0.0.1", 1)
    await picky.connect()
    await picky.send_json_to({"type": "hello", "want_country": "RU"})
    assert (await picky.receive_json_from(timeout=3))["type"] == "ready"
    assert (await join(picky))["type"] == "queue.waiting"
    german = await acommunicator(WS, await amake_user())
    german.scope["client"] = ("2.0.0.1", 1)
    await german.connect()
    await german.send_json_to({"type": "hello"})
    await german.receive_json_from(timeout=3)
    assert (await join(german))["type"] == "queue.waiting"
    russian = await acommunicator(WS, await amake_user())
    russian.scope["client"] = ("3.0.0.1", 1)
    await russian.connect()
    await russian.send_json_to({"type": "hello"})
    await russian.receive_json_from(timeout=3)
    found = await join(russian)
    assert found["type"] == "match.found" and found["partner"]["country"] == "DE"
    assert (await picky.receive_json_from(timeout=3))["partner"]["country"] == "RU"
    assert await german.receive_nothing(QUIET)
    await close_all(picky, german, russian)


def country_by_first_octet(ip: str) -> str | None:
    """An injected resolver (VIDEOCHAT_COUNTRY_RESOLVER) for a deterministic country test."""
    return {"1": "DE", "2": "DE", "3": "RU"}.get(ip.split(".")[0])


async def test_queue_join_needs_hello_and_waiting_shows_expected_wait(amake_user):
    comm = await connect(await amake_user())
    await comm.send_json_to({"type": "queue.join"})
    await expect_error(comm, "hello_required")
    await comm.send_json_to({"type": "hello"})
    await comm.receive_json_from(timeout=3)
    waiting = await join(comm)
    assert waiting == {"type": "queue.waiting", "expected_wait_s": None}  # no history yet
    await comm.send_json_to({"type": "queue.leave"})
    assert await comm.receive_json_from(timeout=3) == {"type": "queue.left"}
    await comm.disconnect()


# --- signalling
async def four(amake_user):  # type: ignore[no-untyped-def]
    """Two pairs: (a, b) and (c, d); returns the sockets and the two match ids."""
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, _ = await pair(a, b)
    c, _ = await ready(await amake_user())
    d, _ = await ready(await amake_user())
    fc, _ = await pair(c, d)
    return a, b, c, d, fa["match_id"], fc["match_id"]


async def test_signal_relayed_only_to_partner(amake_user):
    a, b, c, d, ab, _cd = await four(amake_user)
    # b is the offerer (it arrived second).
    await b.send_json_to({"type": "signal", "match_id": ab, "kind": "offer", "data": OFFER})
    assert await a.receive_json_from(timeout=3) == {
        "type": "signal",
        "match_id": ab,
        "kind": "offer",
        "data": OFFER,
    }
    await a.send_json_to({"type": "signal", "match_id": ab, "kind": "ice", "data": ICE})
    got = await b.receive_json_from(timeout=3)
    assert got["kind"] == "ice" and got["data"] == ICE
    for other in (c, d):
        assert await other.receive_nothing(QUIET)
    await close_all(a, b, c, d)


async def test_signal_to_someone_elses_match_or_bad_id_is_refused_and_nothing_leaks(amake_user):
    a, b, c, d, ab, cd = await four(amake_user)
    # c names a-b's match (ids from the client are untrusted).
    await c.send_json_to({"type": "signal", "match_id": ab, "kind": "offer", "data": OFFER})
    await expect_error(c, "not_in_match")
    await c.send_json_to({"type": "chat", "match_id": ab, "text": "hi from outside"})
    await expect_error(c, "not_in_match")
    await a.send_json_to({"type": "signal", "match_id": "made-up", "kind": "ice", "data": ICE})
    await expect_error(a, "not_in_match")
    for sock in (a, b, d):
        assert await sock.receive_nothing(QUIET)
    # Their own match still works.
    await c.send_json_to({"type": "signal", "match_id": cd, "kind": "ice", "data": ICE})
    assert (await d.receive_json_from(timeout=3))["type"] == "signal"
    await close_all(a, b, c, d)


async def test_oversize_sdp_and_mismatched_data_are_refused(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, _ = await pair(a, b)
    big = {"type": "offer", "sdp": "a=x\r\n" * 2200}  # 11 KB, under the frame limit
    await b.send_json_to(
        {"type": "signal", "match_id": fa["match_id"], "kind": "offer", "data": big}
    )
    await expect_error(b, "sdp_too_large")
    await b.send_json_to(
        {"type": "signal", "match_id": fa["match_id"], "kind": "answer", "data": OFFER}
    )
    await expect_error(b, "invalid")
    assert await a.receive_nothing(QUIET)
    await close_all(a, b)


# --- next, leave, disconnect
async def test_next_requeues_both_and_third_and_fourth_get_matched(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, _ = await pair(a, b)
    old = fa["match_id"]
    await a.send_json_to({"type": "next"})
    assert (await a.receive_json_from(timeout=3))["type"] == "queue.waiting"
    assert await b.receive_json_from(timeout=3) == {
        "type": "match.ended",
        "match_id": old,
        "reason": "next",
    }
    # b is back in the queue without asking, and not paired again with a (skip).
    assert (await b.receive_json_from(timeout=3))["type"] == "queue.waiting"
    # Frames about the old match are refused on both sides.
    await a.send_json_to({"type": "signal", "match_id": old, "kind": "ice", "data": ICE})
    await expect_error(a, "not_in_match")
    await b.send_json_to({"type": "chat", "match_id": old, "text": "still there?"})
    await expect_error(b, "not_in_match")
    assert await a.receive_nothing(QUIET) and await b.receive_nothing(QUIET)
    c, _ = await ready(await amake_user())
    d, _ = await ready(await amake_user())
    found_c = await join(c)
    found_d = await join(d)
    assert found_c["type"] == found_d["type"] == "match.found"
    got_a = await a.receive_json_from(timeout=3)
    got_b = await b.receive_json_from(timeout=3)
    assert {got_a["match_id"], got_b["match_id"]} == {found_c["match_id"], found_d["match_id"]}
    await close_all(a, b, c, d)


def waiting_traces(user_id: int) -> list[str]:
    """Every trace of `user_id` in matchmaking's Redis state."""
    r = get_redis()
    idx, wait, pair_key, _last, ttl, _stats = mm.state_keys()
    traces = []
    if r.hexists(wait, user_id):
        traces.append("wait")
    if r.hexists(pair_key, user_id):
        traces.append("pair")
    for member in r.zrange(idx, 0, -1):
        if member.decode().endswith(f"|{user_id}"):
            traces.append("idx")
    for member in r.zrange(ttl, 0, -1):
        if member.decode() in (f"w:{user_id}", f"p:{user_id}"):
            traces.append("ttl")
    return traces


async def test_disconnect_while_waiting_leaves_the_queue_clean(amake_user):
    user = await amake_user()
    comm, _ = await ready(user)
    await join(comm)
    assert "wait" in waiting_traces(user.pk)
    await comm.disconnect()
    # The public card waited inside the queue entry: it leaves with it.
    assert waiting_traces(user.pk) == []


async def test_disconnect_in_a_match_tells_partner_and_requeues_them(amake_user):
    ua, ub = await amake_user(), await amake_user()
    a, _ = await ready(ua)
    b, _ = await ready(ub)
    fa, _ = await pair(a, b)
    await b.disconnect()
    assert await a.receive_json_from(timeout=3) == {
        "type": "match.ended",
        "match_id": fa["match_id"],
        "reason": "disconnected",
    }
    assert (await a.receive_json_from(timeout=3))["type"] == "queue.waiting"
    assert waiting_traces(ub.pk) == []
    # a's new partner is whoever comes next.
    c, _ = await ready(await amake_user())
    assert (await join(c))["type"] == "match.found"
    assert (await a.receive_json_from(timeout=3))["type"] == "match.found"
    await close_all(a, c)


async def test_queue_leave_during_match_ends_it_for_partner(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, _ = await pair(a, b)
    await a.send_json_to({"type": "queue.leave"})
    assert await a.receive_json_from(timeout=3) == {"type": "queue.left"}
    ended = await b.receive_json_from(timeout=3)
    assert ended == {"type": "match.ended", "match_id": fa["match_id"], "reason": "left"}
    assert (await b.receive_json_from(timeout=3))["type"] == "queue.waiting"
    await close_all(a, b)


async def test_second_window_replaces_the_first(amake_user):
    user = await amake_user()
    first, _ = await ready(user)
    await join(first)
    second = await connect(user)
    await expect_error(first, "replaced")
    assert (await first.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4409}
    assert waiting_traces(user.pk) == []  # the older window's place was given up
    await second.send_json_to({"type": "hello"})
    assert (await second.receive_json_from(timeout=3))["type"] == "ready"
    assert (await join(second))["type"] == "queue.waiting"
    await second.disconnect()


# --- chat
async def test_chat_relayed_with_translation_for_each_side(amake_user, settings):
    with libretranslate_server() as lt:
        settings.TRANSLATION_BACKEND = "libretranslate"
        settings.LIBRETRANSLATE_URL = lt.url
        settings.LIBRETRANSLATE_API_KEY = "k-123"
        a, _ = await ready(await amake_user(), language="en", translate_to="de")
        b, _ = await ready(await amake_user(), language="ru", translate_to="ru")
        fa, _ = await pair(a, b)
        mid = fa["match_id"]
        await a.send_json_to({"type": "chat", "match_id": mid, "text": "hello"})
        assert await a.receive_json_from(timeout=3) == {
            "type": "chat",
            "match_id": mid,
            "from": "me",
            "text": "hello",
            "lang": "en",
            "translation": "[de] hello",
        }
        assert await b.receive_json_from(timeout=3) == {
            "type": "chat",
            "match_id": mid,
            "from": "partner",
            "text": "hello",
            "lang": "en",
            "translation": "[ru] hello",
        }
        # Same language as the reader's target: nothing to translate, no request made.
        await b.send_json_to({"type": "chat", "match_id": mid, "text": "привет"})
        mine = await b.receive_json_from(timeout=3)
        assert mine["from"] == "me" and mine["translation"] is None and mine["lang"] == "ru"
        theirs = await a.receive_json_from(timeout=3)
        assert theirs["from"] == "partner" and theirs["translation"] == "[de] привет"
        asked = [(q["q"], q["source"], q["target"]) for q in lt.requests]
        assert sorted(asked) == sorted(
            [("hello", "en", "de"), ("hello", "en", "ru"), ("привет", "ru", "de")]
        )
        assert all(q["format"] == "text" and q["api_key"] == "k-123" for q in lt.requests)
        await close_all(a, b)


async def test_chat_delivered_untranslated_when_translator_fails_or_is_slow(amake_user, settings):
    with libretranslate_server() as lt:
        settings.TRANSLATION_BACKEND = "libretranslate"
        settings.LIBRETRANSLATE_URL = lt.url
        settings.VIDEOCHAT_TRANSLATION_TIMEOUT_SECONDS = 0.5
        a, _ = await ready(await amake_user(), language="en", translate_to="")
        b, _ = await ready(await amake_user(), language="ru", translate_to="ru")
        fa, _ = await pair(a, b)
        lt.fail = True
        await a.send_json_to({"type": "chat", "match_id": fa["match_id"], "text": "one"})
        assert (await a.receive_json_from(timeout=3))["translation"] is None
        got = await b.receive_json_from(timeout=3)
        assert got["text"] == "one" and got["translation"] is None
        lt.fail = False
        lt.answering.clear()  # the translator takes longer than the timeout: no answer yet
        started = time.monotonic()
        await a.send_json_to({"type": "chat", "match_id": fa["match_id"], "text": "two"})
        await a.receive_json_from(timeout=3)
        got = await b.receive_json_from(timeout=3)
        assert got["text"] == "two" and got["translation"] is None
        assert time.monotonic() - started < 1.8
        await close_all(a, b)


async def test_chat_length_is_checked(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, _ = await pair(a, b)
    await a.send_json_to({"type": "chat", "match_id": fa["match_id"], "text": "x" * 501})
    await expect_error(a, "invalid")
    await a.send_json_to({"type": "chat", "match_id": fa["match_id"], "text": ""})
    await expect_error(a, "invalid")
    assert await b.receive_nothing(QUIET)
    await close_all(a, b)


def row_counts() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()}


async def test_a_whole_match_writes_nothing_to_the_database(amake_user):
    users = [await amake_user() for _ in range(3)]
    # Sessions are made by the test's login step, before counting.
    comms = [await acommunicator(WS, u) for u in users]
    before = await sync_to_async(row_counts)()
    for comm in comms:
        assert (await comm.connect())[0]
    a, b, c = comms
    for comm in comms:
        await comm.send_json_to(
            {
                "type": "hello",
                "client": {
                    "browser": "Chromium 156",
                    "os": "Linux",
                    "cameras": 1,
                    "microphones": 1,
                    "timezone": "Europe/Berlin",
                    "language": "de-DE",
                },
                "language": "de",
            }
        )
        assert (await comm.receive_json_from(timeout=3))["type"] == "ready"
    fa, _ = await pair(a, b)
    mid = fa["match_id"]
    await b.send_json_to({"type": "signal", "match_id": mid, "kind": "offer", "data": OFFER})
    await a.receive_json_from(timeout=3)
    await a.send_json_to({"type": "chat", "match_id": mid, "text": "a secret line"})
    await a.receive_json_from(timeout=3)
    await b.receive_json_from(timeout=3)
    await a.send_json_to({"type": "next"})
    await a.receive_json_from(timeout=3)
    await b.receive_json_from(timeout=3)
    await b.receive_json_from(timeout=3)
    assert (await join(c))["type"] == "match.found"
    await close_all(a, b, c)
    assert await sync_to_async(row_counts)() == before


# --- who may enter
async def test_under_18_is_refused(amake_user):
    today = timezone.localdate()
    minor = await amake_user(profile__birth_date=today.replace(year=today.year - 17))
    comm = await connect(minor)
    await expect_error(comm, "age_restricted")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    unknown = await amake_user(profile__birth_date=None)
    comm = await connect(unknown)
    await expect_error(comm, "age_restricted")


async def test_banned_user_is_refused_and_a_new_ban_closes_open_sockets(amake_user):
    from videochat.services import ban_create

    user = await amake_user()
    comm, _ = await ready(user)
    await join(comm)
    await sync_to_async(ban_create)(
        user=user, reason="rude", duration=dt.timedelta(days=1), created_by=None
    )
    await expect_error(comm, "banned")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    assert waiting_traces(user.pk) == []
    again = await connect(user)
    await expect_error(again, "banned")
    assert await again.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}


async def test_a_closing_socket_ignores_what_its_client_sent_meanwhile(amake_user):
    """Frames already on their way when the server decided to close (refused at the door,
    banned, replaced) are dropped: not handled, and no reply after the close."""
    from videochat.services import ban_create

    user = await amake_user()
    comm, _ = await ready(user)
    await sync_to_async(ban_create)(
        user=user, reason="rude", duration=dt.timedelta(days=1), created_by=None
    )
    await expect_error(comm, "banned")
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    await comm.send_json_to({"type": "queue.join"})
    assert await comm.receive_nothing(QUIET)
    assert waiting_traces(user.pk) == []
    refused = await connect(user)
    await expect_error(refused, "banned")
    assert await refused.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    await refused.send_json_to({"type": "hello"})
    assert await refused.receive_nothing(QUIET)


async def test_ban_follows_the_facebook_id_to_a_new_account(amake_user):
    from allauth.socialaccount.models import SocialAccount

    from videochat.services import ban_create

    old, new = await amake_user(), await amake_user()
    await sync_to_async(SocialAccount.objects.create)(user=old, provider="facebook", uid="1001")
    await sync_to_async(ban_create)(
        user=old, reason="rude", duration=dt.timedelta(days=3), created_by=None
    )
    # The old account is deleted and the same Facebook profile signs up again.
    await sync_to_async(old.delete)()
    assert await sync_to_async(Ban.objects.filter(facebook_uid="1001").count)() == 1
    await sync_to_async(SocialAccount.objects.create)(user=new, provider="facebook", uid="1001")
    comm = await connect(new)
    await expect_error(comm, "banned")


async def test_expired_ban_lets_the_user_in(amake_user):
    user = await amake_user()
    now = timezone.now()
    await sync_to_async(Ban.objects.create)(
        user=user,
        reason="old",
        starts_at=now - dt.timedelta(days=3),
        expires_at=now - dt.timedelta(seconds=1),
    )
    comm, _ = await ready(user)
    await comm.disconnect()


async def test_ready_carries_stun_and_a_verifiable_turn_credential(amake_user, settings):
    settings.VIDEOCHAT_STUN_URLS = ["stun:turn.example.test:3478"]
    settings.VIDEOCHAT_TURN_URLS = ["turn:turn.example.test:3478?transport=udp"]
    settings.VIDEOCHAT_TURN_SECRET = "shared-with-coturn"
    settings.VIDEOCHAT_TURN_TTL_SECONDS = 600
    user = await amake_user()
    comm, frame = await ready(user)
    stun, turn = frame["ice_servers"]
    assert stun == {"urls": ["stun:turn.example.test:3478"]}  # no null fields
    assert turn["urls"] == ["turn:turn.example.test:3478?transport=udp"]
    expiry, uid = turn["username"].split(":")
    assert uid == str(user.pk)
    assert 590 <= int(expiry) - time.time() <= 601
    expected = base64.b64encode(
        hmac.new(b"shared-with-coturn", turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected
    await comm.disconnect()


async def test_anonymous_is_closed_4401():
    comm = await acommunicator(WS)
    await comm.connect()
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}


async def test_who_presses_next_meets_the_one_already_waiting(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    await pair(a, b)
    c, _ = await ready(await amake_user())
    assert (await join(c))["type"] == "queue.waiting"
    await a.send_json_to({"type": "next"})
    found_a = await a.receive_json_from(timeout=3)
    found_c = await c.receive_json_from(timeout=3)
    assert found_a["type"] == found_c["type"] == "match.found"
    assert found_a["match_id"] == found_c["match_id"]
    assert (await b.receive_json_from(timeout=3))["type"] == "match.ended"
    assert (await b.receive_json_from(timeout=3))["type"] == "queue.waiting"
    await close_all(a, b, c)


async def test_heartbeat_keeps_a_long_wait_in_the_queue(amake_user, settings):
    settings.VIDEOCHAT_WAIT_TTL_SECONDS = 10
    settings.VIDEOCHAT_HEARTBEAT_SECONDS = 0.05
    patient_user = await amake_user()
    patient, _ = await ready(patient_user)
    assert (await join(patient))["type"] == "queue.waiting"
    # Twice the deadline in all, in steps a heartbeat apart: each step leaves 4 s of the
    # 10, and only the socket's heartbeat puts the deadline back at 10 s ahead.
    for _ in range(4):
        await advance_matchmaking_clock(6)
        await until(
            lambda: waiting_deadline_ahead(patient_user.pk, 5), what="a heartbeat renewed it"
        )
    late, _ = await ready(await amake_user())
    assert (await join(late))["type"] == "match.found"
    assert (await patient.receive_json_from(timeout=3))["type"] == "match.found"
    await close_all(patient, late)


async def test_waiting_carries_the_recent_expected_wait(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    await pair(a, b)  # a waited a moment: now there is a sample for users like a
    c, _ = await ready(await amake_user())
    waiting = await join(c)
    assert waiting["type"] == "queue.waiting"
    assert isinstance(waiting["expected_wait_s"], float) and waiting["expected_wait_s"] >= 0
    await close_all(a, b, c)
