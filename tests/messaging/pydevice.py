"""An independent CallsApp device written with the Python `vodozemac` package (the audited
Olm/Megolm core the browser's SDK is built on, through different bindings). It signs in
through the real login form, speaks the Matrix HTTP API of docs/protocols/callsapp.md and
reads its sync stream over /ws/messaging/, so a test can check that the browser and another
implementation understand each other both ways."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from typing import Any

import requests
import vodozemac
from websockets.sync.client import connect

OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
PREFIX = "/messaging/_matrix/client/v3/"


def canonical(obj: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


class PyDevice:
    def __init__(self, base_url: str, email: str, password: str) -> None:
        self.base = base_url
        self.http = requests.Session()
        page = self.http.get(f"{base_url}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, "login form without a CSRF token"
        resp = self.http.post(
            f"{base_url}/accounts/login/",
            data={"csrfmiddlewaretoken": token.group(1), "login": email, "password": password},
            headers={"Referer": f"{base_url}/accounts/login/"},
            timeout=10,
        )
        assert resp.status_code in (200, 302) and "sessionid" in self.http.cookies, resp.text[:300]
        who = self.api("GET", "account/whoami")
        self.user_id: str = who["user_id"]
        self.device_id: str = who["device_id"]
        self.account = vodozemac.Account()
        self.sessions: dict[str, list[vodozemac.Session]] = {}
        self.inbound: dict[str, vodozemac.InboundGroupSession] = {}
        self.outbound: dict[str, vodozemac.GroupSession] = {}
        self.outbound_keys: dict[str, str] = {}  # room id -> session key at index 0
        self.last_seq = 0
        self.to_device: list[dict[str, Any]] = []  # decrypted, in order
        self.room_messages: list[dict[str, Any]] = []  # decrypted, in order

    # --- HTTP

    def api(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base + (path if path.startswith("/") else PREFIX + path)
        headers = {"X-CSRFToken": self.http.cookies.get("csrftoken", "")}
        resp = self.http.request(method, url, json=body, headers=headers, timeout=15)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    @property
    def curve(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed(self) -> str:
        return self.account.ed25519_key.to_base64()

    def signed(self, obj: dict[str, Any]) -> dict[str, Any]:
        bare = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        sig = self.account.sign(canonical(bare)).to_base64()
        return {**obj, "signatures": {self.user_id: {f"ed25519:{self.device_id}": sig}}}

    def upload_keys(self, one_time: int = 5) -> dict[str, Any]:
        device_keys = self.signed(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM, MEGOLM],
                "keys": {
                    f"curve25519:{self.device_id}": self.curve,
                    f"ed25519:{self.device_id}": self.ed,
                },
            }
        )
        self.account.generate_one_time_keys(one_time)
        self.account.generate_fallback_key()
        otks = {
            f"signed_curve25519:{kid}": self.signed({"key": key.to_base64()})
            for kid, key in self.account.one_time_keys.items()
        }
        fallback = {
            f"signed_curve25519:{kid}": self.signed({"key": key.to_base64(), "fallback": True})
            for kid, key in self.account.fallback_key.items()
        }
        self.account.mark_keys_as_published()
        return self.api(
            "POST",
            "keys/upload",
            {"device_keys": device_keys, "one_time_keys": otks, "fallback_keys": fallback},
        )

    def device_keys_of(self, user_id: str) -> dict[str, dict[str, Any]]:
        return self.api("POST", "keys/query", {"device_keys": {user_id: []}})["device_keys"].get(
            user_id, {}
        )

    # --- Olm (to-device)

    def olm_session_with(
        self, user_id: str, device_id: str, keys: dict[str, Any]
    ) -> vodozemac.Session:
        curve = keys["keys"][f"curve25519:{device_id}"]
        if self.sessions.get(curve):
            return self.sessions[curve][-1]
        claimed = self.api(
            "POST", "keys/claim", {"one_time_keys": {user_id: {device_id: "signed_curve25519"}}}
        )["one_time_keys"][user_id][device_id]
        otk = next(iter(claimed.values()))["key"]
        session = self.account.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_base64(curve),
            vodozemac.Curve25519PublicKey.from_base64(otk),
        )
        self.sessions.setdefault(curve, []).append(session)
        return session

    def olm_content(
        self,
        user_id: str,
        device_id: str,
        keys: dict[str, Any],
        event_type: str,
        content: dict[str, Any],
    ) -> dict[str, Any]:
        curve = keys["keys"][f"curve25519:{device_id}"]
        plaintext = {
            "type": event_type,
            "content": content,
            "sender": self.user_id,
            "sender_device": self.device_id,
            "keys": {"ed25519": self.ed},
            "recipient": user_id,
            "recipient_keys": {"ed25519": keys["keys"][f"ed25519:{device_id}"]},
        }
        session = self.olm_session_with(user_id, device_id, keys)
        msg_type, body = session.encrypt(canonical(plaintext)).to_parts()
        return {
            "algorithm": OLM,
            "sender_key": self.curve,
            "ciphertext": {curve: {"type": msg_type, "body": b64(body)}},
        }

    def send_to_device(self, user_id: str, event_type: str, content: dict[str, Any]) -> None:
        """Olm-encrypt `event_type`/`content` to every device of `user_id`."""
        messages = {
            device_id: self.olm_content(user_id, device_id, keys, event_type, content)
            for device_id, keys in self.device_keys_of(user_id).items()
        }
        self.api(
            "PUT",
            f"sendToDevice/m.room.encrypted/{uuid.uuid4().hex}",
            {"messages": {user_id: messages}},
        )

    def decrypt_olm(self, event: dict[str, Any]) -> dict[str, Any]:
        content = event["content"]
        mine = content["ciphertext"][self.curve]
        sender_key = content["sender_key"]
        message = vodozemac.AnyOlmMessage.from_parts(mine["type"], unb64(mine["body"]))
        for session in self.sessions.get(sender_key, []):
            if mine["type"] == 1 or session.session_matches(message.to_pre_key()):
                with contextlib.suppress(vodozemac.OlmDecryptionException):  # try the next
                    return json.loads(session.decrypt(message))
        session, plaintext = self.account.create_inbound_session(
            vodozemac.Curve25519PublicKey.from_base64(sender_key), message.to_pre_key()
        )
        self.sessions.setdefault(sender_key, []).append(session)
        return json.loads(plaintext)

    # --- Megolm (room events)

    def share_room_key(self, room_id: str, user_ids: list[str]) -> None:
        self.new_room_session(room_id)
        self.send_room_key(room_id, user_ids)

    def new_room_session(self, room_id: str) -> None:
        """A new Megolm session for the room, its key sent to nobody yet (kept as it is at
        message index 0, so a key sent late still opens the messages sent before it)."""
        session = vodozemac.GroupSession()
        self.outbound[room_id] = session
        self.outbound_keys[room_id] = session.session_key.to_base64()

    def send_room_key(self, room_id: str, user_ids: list[str]) -> None:
        """The room's current session key, over Olm, to every device of `user_ids`."""
        session = self.outbound[room_id]
        key = {
            "algorithm": MEGOLM,
            "room_id": room_id,
            "session_id": session.session_id,
            "session_key": self.outbound_keys[room_id],
        }
        for user_id in user_ids:
            self.send_to_device(user_id, "m.room_key", key)

    def megolm_content(self, room_id: str, content: dict[str, Any]) -> dict[str, Any]:
        session = self.outbound[room_id]
        plaintext = {"type": "m.room.message", "content": content, "room_id": room_id}
        return {
            "algorithm": MEGOLM,
            "sender_key": self.curve,
            "device_id": self.device_id,
            "session_id": session.session_id,
            "ciphertext": session.encrypt(canonical(plaintext)).to_base64(),
        }

    def send_room_message(self, room_id: str, body: str) -> str:
        content = self.megolm_content(room_id, {"msgtype": "m.text", "body": body})
        return self.api(
            "PUT", f"rooms/{room_id}/send/m.room.encrypted/{uuid.uuid4().hex}", content
        )["event_id"]

    def decrypt_megolm(self, event: dict[str, Any]) -> dict[str, Any]:
        inbound = self.inbound[event["content"]["session_id"]]
        message = vodozemac.MegolmMessage.from_base64(event["content"]["ciphertext"])
        return json.loads(inbound.decrypt(message).plaintext)

    # --- the sync stream

    def sync(self, until: Any, timeout: float = 20) -> None:
        """Read the stream (acking what was handled) until `until(self)` is true."""
        ws_url = self.base.replace("http://", "ws://") + "/ws/messaging/"
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        with connect(
            ws_url, additional_headers={"Cookie": cookie, "Origin": self.base}, open_timeout=10
        ) as ws:
            ws.send(json.dumps({"type": "hello", "last_seq": self.last_seq}))
            while not until(self):
                frame = json.loads(ws.recv(timeout=timeout))
                if frame["type"] != "sync":
                    continue
                self.handle(frame["sync"])
                if frame.get("seq") is not None:
                    self.last_seq = frame["seq"]
                    ws.send(json.dumps({"type": "ack", "seq": frame["seq"]}))

    def handle(self, sync: dict[str, Any]) -> None:
        for event in sync.get("to_device", {}).get("events", []):
            if event["type"] != "m.room.encrypted" or self.curve not in event["content"].get(
                "ciphertext", {}
            ):
                continue
            clear = self.decrypt_olm(event)
            self.to_device.append(clear)
            if clear["type"] == "m.room_key":
                key = clear["content"]
                self.inbound[key["session_id"]] = vodozemac.InboundGroupSession(
                    vodozemac.SessionKey(key["session_key"])
                )
        for room_id, room in sync.get("rooms", {}).get("join", {}).items():
            for event in room.get("timeline", {}).get("events", []):
                if (
                    event["type"] == "m.room.encrypted"
                    and event["content"].get("session_id") in self.inbound
                ):
                    clear = self.decrypt_megolm(event)
                    self.room_messages.append(
                        {"room_id": room_id, "event_id": event["event_id"], **clear}
                    )
