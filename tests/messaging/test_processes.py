"""CallsApp across two real ASGI processes (uvicorn, as in production): a message sent
through one reaches a socket on the other, and a kill -9 of the receiver's process loses
nothing: the device reconnects to the survivor with hello{last acked seq} and gets the rest."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest
import requests
import websockets
from django.conf import settings

from messaging.ids import mxid
from messaging.schemas import DeviceKeysBody
from messaging.services import keys_upload, room_create
from tests.conftest import login_session
from tests.factories import UserFactory
from tests.messaging.olm import OlmDevice

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "c" * 32


class Person:
    def __init__(self) -> None:
        self.user = UserFactory()
        self.session_key, self.device = login_session(self.user)
        self.olm = OlmDevice(mxid(self.user.pk), self.device.device_id)
        keys_upload(
            device=self.device,
            device_keys=DeviceKeysBody.model_validate(self.olm.device_keys()),
            one_time_keys=self.olm.one_time_keys(3),
            fallback_keys=self.olm.fallback_key(),
        )
        self.mxid = mxid(self.user.pk)

    def http(self) -> requests.Session:
        s = requests.Session()
        s.cookies.set(settings.SESSION_COOKIE_NAME, self.session_key)
        s.cookies.set("csrftoken", CSRF)
        s.headers["X-CSRFToken"] = CSRF
        return s

    def ws_headers(self, server: Any) -> dict[str, str]:
        return {
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={self.session_key}",
            "Origin": server.url,
        }


def put(http: requests.Session, server: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = http.put(f"{server.url}/messaging/_matrix/client/v3/{path}", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def post(http: requests.Session, server: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = http.post(f"{server.url}/messaging/_matrix/client/v3/{path}", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


class Receiver:
    """Bob's client: decrypts what comes, remembers event ids (dedupe), acks after storing."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.texts: list[str] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.acked = 0

    def take(self, frame: dict[str, Any]) -> None:
        sync = frame.get("sync", {})
        olm = self.person.olm
        for event in sync.get("to_device", {}).get("events", []):
            olm.accept_room_key(olm.olm_decrypt(event["content"]))
        for room in sync.get("rooms", {}).get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                if event["type"] != "m.room.encrypted":
                    continue
                if event["event_id"] in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(event["event_id"])
                self.texts.append(olm.megolm_decrypt(event["content"])["content"]["body"])

    async def until(self, ws: Any, n_texts: int, *, ack: bool = True) -> None:
        while len(self.texts) < n_texts:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
            if frame["type"] != "sync":
                continue
            self.take(frame)
            if ack and frame.get("seq"):
                await ws.send(json.dumps({"type": "ack", "seq": frame["seq"]}))
                self.acked = frame["seq"]


def test_a_message_sent_on_one_process_reaches_a_socket_on_the_other_and_survives_a_kill(
    asgi_servers,
):
    one, two = asgi_servers(server="uvicorn"), asgi_servers(server="uvicorn")
    alice, bob = Person(), Person()
    room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
    http = alice.http()
    group = alice.olm.megolm_session()
    claimed = post(
        http,
        one,
        "keys/claim",
        {"one_time_keys": {bob.mxid: {bob.device.device_id: "signed_curve25519"}}},
    )
    (otk,) = claimed["one_time_keys"][bob.mxid][bob.device.device_id].values()
    to_bob = alice.olm.olm_encrypt(
        bob.olm.curve25519, otk["key"], alice.olm.room_key_payload(room.room_id, group)
    )
    put(
        http,
        one,
        "sendToDevice/m.room.encrypted/k1",
        {"messages": {bob.mxid: {bob.device.device_id: to_bob}}},
    )

    def send(text: str, txn: str) -> None:
        content = alice.olm.megolm_encrypt(group, room.room_id, text)
        put(http, one, f"rooms/{room.room_id}/send/m.room.encrypted/{txn}", content)

    receiver = Receiver(bob)

    async def scenario() -> None:
        async with websockets.connect(
            f"{two.ws_url}/ws/messaging/", additional_headers=bob.ws_headers(two)
        ) as ws:
            await ws.send(json.dumps({"type": "hello", "last_seq": 0}))
            await receiver.until(ws, 0)
            # Live: sent through process one, pushed by process two.
            await asyncio.to_thread(send, "first", "t1")
            await receiver.until(ws, 1)
            # The next one arrives but Bob dies before storing it (no ack) ...
            await asyncio.to_thread(send, "second", "t2")
            await receiver.until(ws, 2, ack=False)
            os.kill(two.process.pid, signal.SIGKILL)
            two.process.wait()
        # ... one more is sent while Bob is away ...
        await asyncio.to_thread(send, "third", "t3")
        # ... and Bob comes back on the survivor with what he stored.
        async with websockets.connect(
            f"{one.ws_url}/ws/messaging/", additional_headers=bob.ws_headers(one)
        ) as ws:
            await ws.send(json.dumps({"type": "hello", "last_seq": receiver.acked}))
            await receiver.until(ws, 3)

    asyncio.run(scenario())
    assert receiver.texts == ["first", "second", "third"]
    assert receiver.duplicates == 1  # "second" came again (never acked), deduped by event id
