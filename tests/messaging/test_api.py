"""The HTTP API as the browser's OlmMachine uses it (session cookie + CSRF header, the
session's device), and the sync socket on the real ASGI app. vodozemac devices make the
keys and ciphertexts."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from accounts.models import Profile
from messaging.ids import mxid
from messaging.models import MediaBlob, RoomEvent
from realtime.keys import presence_key
from realtime.models import StreamItem
from realtime.presence import online_ids_sync
from realtime.redis import get_redis
from tests.conftest import acommunicator, aconnected, communicator, login_session
from tests.factories import UserFactory, make_contacts
from tests.messaging.olm import OlmDevice

pytestmark = pytest.mark.django_db(transaction=True)

C = "/messaging/_matrix/client/v3/"
SETTINGS = "/messaging/api/settings"
UPLOAD = "/messaging/_matrix/media/v3/upload"
DOWNLOAD = "/messaging/_matrix/client/v1/media/download/"


def years_ago(years: int) -> dt.date:
    """A birth date `years` (and a half) ago: that age whatever the day."""
    return timezone.localdate() - dt.timedelta(days=int(365.25 * years) + 180)


# An EEA user under 16, with the protective defaults sign-up gave them.
EEA_UNDER_16 = {
    "birth_date": years_ago(14),
    "country": "DE",
    "show_online_status": False,
    "send_read_receipts": False,
}
UNDER_10 = {"birth_date": years_ago(8)}


class Browser:
    """One signed-in browser: its session, its issued device, its Olm account."""

    def __init__(self, user: Any = None, **profile: Any) -> None:
        self.user = user or UserFactory(**{f"profile__{k}": v for k, v in profile.items()})
        self.session_key, self.device = login_session(self.user)
        self.client = Client(enforce_csrf_checks=True)
        self.client.cookies[settings.SESSION_COOKIE_NAME] = self.session_key
        self.client.get("/messaging/")  # sets the CSRF cookie, as the page does
        self.csrf = self.client.cookies["csrftoken"].value
        self.olm = OlmDevice(mxid(self.user.pk), self.device.device_id)

    @property
    def mxid(self) -> str:
        return mxid(self.user.pk)

    def call(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        url = path if path.startswith("/") else C + path
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {})
        kwargs: dict[str, Any] = {"HTTP_X_CSRFTOKEN": self.csrf, **extra}
        if method == "GET":
            return self.client.get(url)
        ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        return getattr(self.client, method.lower())(url, data, content_type=ctype, **kwargs)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.call(method, path, body)
        assert resp.status_code == 200, resp.content
        return resp.json() if resp["Content-Type"].startswith("application/json") else resp.content

    def upload_keys(self, otks: int = 3) -> dict[str, Any]:
        return self.ok(
            "POST",
            "keys/upload",
            {
                "device_keys": self.olm.device_keys(),
                "one_time_keys": self.olm.one_time_keys(otks),
                "fallback_keys": self.olm.fallback_key(),
            },
        )


def test_whoami_names_the_sessions_own_device():
    alice = Browser()
    assert alice.ok("GET", "account/whoami") == {
        "user_id": alice.mxid,
        "device_id": alice.device.device_id,
    }


def test_a_call_gets_the_relays_ice_servers_with_a_credential_coturn_accepts():
    """voip/turnServer, in Matrix's shape: the STUN and TURN URIs and a credential in
    coturn's use-auth-secret form (HMAC-SHA1 of "<expiry>:<user id>"), for the caller only."""
    alice = Browser()
    with override_settings(
        VIDEOCHAT_STUN_URLS=["stun:turn.example.test:3478"],
        VIDEOCHAT_TURN_URLS=["turn:turn.example.test:3478?transport=udp"],
        VIDEOCHAT_TURN_SECRET="s3cret",
        VIDEOCHAT_TURN_TTL_SECONDS=600,
    ):
        before = int(time.time())
        answer = alice.ok("GET", "voip/turnServer")
    assert answer["uris"] == [
        "stun:turn.example.test:3478",
        "turn:turn.example.test:3478?transport=udp",
    ]
    assert answer["ttl"] == 600
    expiry, user = answer["username"].split(":")
    assert int(user) == alice.user.pk and before + 600 <= int(expiry) <= int(time.time()) + 600
    digest = hmac.new(b"s3cret", answer["username"].encode(), hashlib.sha1).digest()
    assert answer["password"] == base64.b64encode(digest).decode()
    # No relay configured: STUN only, and no credential to hand out.
    with override_settings(VIDEOCHAT_TURN_URLS=[], VIDEOCHAT_STUN_URLS=[]):
        assert alice.ok("GET", "voip/turnServer") == {"uris": [], "ttl": 3600}
    assert Client().get(C + "voip/turnServer").status_code == 401


def test_without_a_session_the_api_answers_401_in_the_specs_shape():
    resp = Client().post(C + "keys/upload", "{}", content_type="application/json")
    assert resp.status_code == 401
    assert resp.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_writes_need_the_csrf_header():
    alice = Browser()
    resp = alice.client.post(C + "keys/upload", "{}", content_type="application/json")
    assert resp.status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        (b"{not json", 400, "M_NOT_JSON"),
        (json.dumps({"device_keys": {"user_id": 1}}).encode(), 400, "M_BAD_JSON"),
        (json.dumps({"one_time_keys": {"nocolon": {}}}).encode(), 400, "M_INVALID_PARAM"),
    ],
)
def test_bad_bodies_get_the_specs_errors(body, status, errcode):
    alice = Browser()
    resp = alice.client.post(
        C + "keys/upload", body, content_type="application/json", HTTP_X_CSRFTOKEN=alice.csrf
    )
    assert resp.status_code == status
    assert resp.json()["errcode"] == errcode


async def test_a_message_travels_from_one_browser_device_to_another_over_http_and_the_socket():
    alice, bob = await sync_to_async(Browser)(), await sync_to_async(Browser)()
    assert (await sync_to_async(bob.upload_keys)(5))["one_time_key_counts"] == {
        "signed_curve25519": 5
    }
    await sync_to_async(alice.upload_keys)()
    room_id = (
        await sync_to_async(alice.ok)(
            "POST", "createRoom", {"invite": [bob.mxid], "is_direct": True}
        )
    )["room_id"]
    query = await sync_to_async(alice.ok)("POST", "keys/query", {"device_keys": {bob.mxid: []}})
    bob_keys = query["device_keys"][bob.mxid][bob.device.device_id]
    assert bob_keys["keys"][f"curve25519:{bob.device.device_id}"] == bob.olm.curve25519
    claimed = await sync_to_async(alice.ok)(
        "POST",
        "keys/claim",
        {"one_time_keys": {bob.mxid: {bob.device.device_id: "signed_curve25519"}}},
    )
    (otk,) = claimed["one_time_keys"][bob.mxid][bob.device.device_id].values()
    group = alice.olm.megolm_session()
    to_bob = alice.olm.olm_encrypt(
        bob.olm.curve25519, otk["key"], alice.olm.room_key_payload(room_id, group)
    )
    await sync_to_async(alice.ok)(
        "PUT",
        "sendToDevice/m.room.encrypted/txn1",
        {"messages": {bob.mxid: {bob.device.device_id: to_bob}}},
    )
    content = alice.olm.megolm_encrypt(group, room_id, "hello over the wire")
    sent = await sync_to_async(alice.ok)(
        "PUT", f"rooms/{room_id}/send/m.room.encrypted/t1", content
    )
    again = await sync_to_async(alice.ok)(
        "PUT", f"rooms/{room_id}/send/m.room.encrypted/t1", content
    )
    assert sent == again  # a resend is applied once
    undelivered = await sync_to_async(alice.ok)(
        "GET", f"/messaging/api/rooms/{room_id}/undelivered"
    )
    assert [e["event_id"] for e in undelivered["events"]] == [sent["event_id"]]
    assert undelivered["events"][0]["pending_devices"] == 1

    # Bob's browser opens its socket on the real app (session cookie, issued device).
    comm = await sync_to_async(communicator)("/ws/messaging/", session_key=bob.session_key)
    ok, _ = await comm.connect()
    assert ok
    await comm.send_json_to({"type": "hello", "last_seq": 0})
    frames = []
    while (frame := await comm.receive_json_from())["type"] != "caught_up":
        frames.append(frame)
    texts = []
    for f in frames:
        for e in f["sync"].get("to_device", {}).get("events", []):
            bob.olm.accept_room_key(bob.olm.olm_decrypt(e["content"]))
        for room in f["sync"].get("rooms", {}).get("join", {}).values():
            for e in room.get("timeline", {}).get("events", []):
                if e["type"] == "m.room.encrypted":
                    texts.append(bob.olm.megolm_decrypt(e["content"])["content"]["body"])
                    assert e["sender"] == alice.mxid and e["event_id"] == sent["event_id"]
    assert texts == ["hello over the wire"]
    await comm.send_json_to({"type": "ack", "seq": frames[-1]["seq"]})
    await comm.send_json_to({"type": "ping"})
    while (await comm.receive_json_from())["type"] != "pong":
        pass
    assert not await StreamItem.objects.filter(device_pk=bob.device.pk).aexists()
    assert (await RoomEvent.objects.aget(event_id=sent["event_id"])).content == {}
    undelivered = await sync_to_async(alice.ok)(
        "GET", f"/messaging/api/rooms/{room_id}/undelivered"
    )
    assert undelivered == {"events": []}
    await comm.disconnect()


def test_an_oversize_request_and_upload_are_refused():
    alice, bob = Browser(), Browser()
    bob.upload_keys()  # a CallsApp device: it is a target of the room's attachments
    room_id = alice.ok("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})["room_id"]
    big = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "A" * 70_000, "session_id": "s"}
    resp = alice.call("PUT", f"rooms/{room_id}/send/m.room.encrypted/t1", big)
    assert resp.status_code == 413 and resp.json()["errcode"] == "M_TOO_LARGE"
    with override_settings(MESSAGING_MEDIA_MAX_BYTES=100):
        resp = alice.call(
            "POST", f"/messaging/_matrix/media/v3/upload?room_id={room_id}", b"x" * 101
        )
        assert resp.status_code == 413 and resp.json()["errcode"] == "M_TOO_LARGE"
        uri = alice.ok("POST", f"/messaging/_matrix/media/v3/upload?room_id={room_id}", b"x" * 100)
    server, media_id = uri["content_uri"].removeprefix("mxc://").split("/")
    got = bob.client.get(f"/messaging/_matrix/client/v1/media/download/{server}/{media_id}")
    assert got.status_code == 200 and got.content == b"x" * 100
    assert (
        bob.client.get(
            f"/messaging/_matrix/client/v1/media/download/{server}/{media_id}"
        ).status_code
        == 404
    )


def test_blocking_is_the_ignored_user_list_and_is_enforced():
    alice, bob = Browser(), Browser()
    assert bob.ok("GET", f"user/{bob.mxid}/account_data/m.ignored_user_list") == {
        "ignored_users": {}
    }
    bob.ok(
        "PUT",
        f"user/{bob.mxid}/account_data/m.ignored_user_list",
        {"ignored_users": {alice.mxid: {}}},
    )
    assert bob.ok("GET", f"user/{bob.mxid}/account_data/m.ignored_user_list") == {
        "ignored_users": {alice.mxid: {}}
    }
    assert bob.call("GET", f"user/{alice.mxid}/account_data/m.ignored_user_list").status_code == 403
    resp = alice.call("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"


def test_online_status_is_shown_only_if_the_user_allows_it():
    alice, bob = Browser(), Browser()
    alice.ok("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})
    # Bob has a live socket somewhere (what presence.socket_up records).
    get_redis().zadd(presence_key(bob.user.pk), {"sock": time.time() + 60})
    assert online_ids_sync([bob.user.pk]) == {bob.user.pk}
    assert alice.ok("GET", f"presence/{bob.mxid}/status") == {"presence": "online"}
    assert bob.ok("PUT", SETTINGS, {"online_status": False}) == {
        "read_receipts": True,
        "online_status": False,
        "locked": False,
    }
    assert alice.ok("GET", f"presence/{bob.mxid}/status") == {"presence": "offline"}
    assert not Profile.objects.get(user=bob.user).show_online_status
    # A stranger's status is nobody's business.
    eve = Browser()
    assert eve.call("GET", f"presence/{bob.mxid}/status").status_code == 404


def test_start_a_chat_by_exact_nickname():
    alice = Browser()
    bob = Browser(nickname="Zed42")
    found = alice.ok("POST", "user_directory/search", {"search_term": "zed42"})
    assert found == {"results": [{"user_id": bob.mxid, "display_name": "Zed42"}], "limited": False}
    assert alice.ok("POST", "user_directory/search", {"search_term": "Zed"})["results"] == []


# --- the EEA under-16 privacy lock: CallsApp's settings are the profile's, under one rule


def test_an_eea_under_16_cannot_switch_the_privacy_defaults_on_from_callsapp():
    kid = Browser(**EEA_UNDER_16)
    assert kid.ok("GET", SETTINGS) == {
        "read_receipts": False,
        "online_status": False,
        "locked": True,
    }
    resp = kid.call("PUT", SETTINGS, {"read_receipts": True, "online_status": True})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
    assert "guardian" in resp.json()["error"]
    profile = Profile.objects.get(user=kid.user)
    assert (profile.send_read_receipts, profile.show_online_status) == (False, False)
    # Keeping them off changes nothing and is no error.
    assert kid.ok("PUT", SETTINGS, {"online_status": False})["online_status"] is False
    # Staff record a guardian's written instruction: now the user chooses, here too.
    Profile.objects.filter(user=kid.user).update(guardian_allows_privacy_changes=True)
    assert kid.ok("PUT", SETTINGS, {"read_receipts": True}) == {
        "read_receipts": True,
        "online_status": False,
        "locked": False,
    }


def test_the_callsapp_page_tells_a_locked_user_why():
    kid = Browser(**EEA_UNDER_16)
    page = kid.client.get("/messaging/").content.decode()
    assert 'data-testid="privacy-locked"' in page and "guardian" in page


async def test_hiding_online_status_from_callsapp_shows_the_user_offline_at_once(amake_user):
    watcher, bob = await amake_user(), await sync_to_async(Browser)()
    await sync_to_async(make_contacts)(watcher, bob.user)  # only a contact may watch
    w = await aconnected("/ws/presence/", watcher)
    b = await aconnected("/ws/presence/", session_key=bob.session_key)
    await w.send_json_to({"type": "presence.watch", "user_ids": [bob.user.pk]})
    assert (await w.receive_json_from())["statuses"] == {str(bob.user.pk): True}

    await sync_to_async(bob.ok)("PUT", SETTINGS, {"online_status": False})

    assert (await w.receive_json_from())["statuses"] == {str(bob.user.pk): False}
    await b.disconnect()
    await w.disconnect()


# --- CallsApp is not for children under 10: not the page only, the API and socket too


def test_an_account_under_10_gets_403_from_the_api():
    kid = Browser(**UNDER_10)
    for method, path, body in (
        ("GET", "account/whoami", None),
        ("POST", "keys/upload", {}),
        ("GET", "joined_rooms", None),
        ("PUT", SETTINGS, {"online_status": False}),
        ("POST", f"{UPLOAD}?room_id=!x:y", b"x"),
    ):
        resp = kid.call(method, path, body)
        assert resp.status_code == 403, (path, resp.content)
        assert resp.json()["errcode"] == "M_FORBIDDEN", path


async def test_an_account_under_10_cannot_open_the_sync_socket():
    kid = await sync_to_async(Browser)(**UNDER_10)
    comm = await acommunicator("/ws/messaging/", session_key=kid.session_key)
    ok, _ = await comm.connect()
    assert ok  # accepted, to say why, then closed for good
    assert (await comm.receive_json_from())["type"] == "error"
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}


def test_an_account_under_10_is_refused_as_an_unknown_user():
    alice, bob = Browser(), Browser()
    kid = Browser(nickname="Kiddo", **UNDER_10)
    unknown = mxid(10**9)
    for who in (kid.mxid, unknown):
        resp = alice.call("POST", "createRoom", {"invite": [who], "is_direct": True})
        assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    room_id = alice.ok("POST", "createRoom", {"name": "club", "invite": [bob.mxid]})["room_id"]
    resp = alice.call("POST", f"rooms/{room_id}/invite", {"user_id": kid.mxid})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    assert alice.ok("POST", "user_directory/search", {"search_term": "kiddo"})["results"] == []
    assert not kid.user.room_memberships.exists()


# --- delete for everyone takes the message's attachment with it


def sent_with_a_file(alice: Browser, bob: Browser) -> tuple[str, str, str]:
    """Alice uploads an attachment to a chat with Bob and sends its message:
    (room id, event id, content uri)."""
    bob.upload_keys()  # a CallsApp device: a target of the room's attachments
    room_id = alice.ok("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})["room_id"]
    uri = alice.ok("POST", f"{UPLOAD}?room_id={room_id}", b"\x8f" * 100)["content_uri"]
    content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "QUJD", "session_id": "s"}
    event_id = alice.ok("PUT", f"rooms/{room_id}/send/m.room.encrypted/t1", content)["event_id"]
    return room_id, event_id, uri


def download(browser: Browser, uri: str) -> Any:
    return browser.client.get(DOWNLOAD + uri.removeprefix("mxc://"))


def test_delete_for_everyone_deletes_the_messages_attachment():
    alice, bob = Browser(), Browser()
    room_id, event_id, uri = sent_with_a_file(alice, bob)
    blob = MediaBlob.objects.get(media_id=uri.rsplit("/", 1)[1])
    path = Path(settings.MEDIA_ROOT) / blob.file.name
    assert path.exists()

    alice.ok("PUT", f"rooms/{room_id}/redact/{event_id}/r1", {"media": [uri]})

    assert download(bob, uri).status_code == 404
    assert not MediaBlob.objects.filter(pk=blob.pk).exists()
    assert not path.exists()


def test_a_redaction_never_deletes_someone_elses_attachment():
    alice, bob = Browser(), Browser()
    room_id, event_id, _ = sent_with_a_file(alice, bob)
    alice.upload_keys()
    bobs = bob.ok("POST", f"{UPLOAD}?room_id={room_id}", b"bob's")["content_uri"]
    # Alice's own upload to another room is not this message's either.
    other = alice.ok("POST", "createRoom", {"name": "g", "invite": [bob.mxid]})["room_id"]
    elsewhere = alice.ok("POST", f"{UPLOAD}?room_id={other}", b"elsewhere")["content_uri"]

    alice.ok("PUT", f"rooms/{room_id}/redact/{event_id}/r1", {"media": [bobs, elsewhere]})

    assert download(alice, bobs).content == b"bob's"
    assert download(bob, elsewhere).content == b"elsewhere"
