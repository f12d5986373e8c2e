"""An independent CallsApp device in Python: the `vodozemac` package (the Olm/Megolm core
the browser SDK is built on) makes real keys, signatures and ciphertexts, so these tests
carry what a browser would send, in the spec's JSON shapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import vodozemac

OLM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: dict[str, Any]) -> bytes:
    clean = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class OlmDevice:
    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.account = vodozemac.Account()
        self.sessions: dict[str, vodozemac.Session] = {}
        self.inbound_groups: dict[str, vodozemac.InboundGroupSession] = {}

    @property
    def curve25519(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self.account.ed25519_key.to_base64()

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        sig = self.account.sign(canonical(obj)).to_base64()
        return {**obj, "signatures": {self.user_id: {f"ed25519:{self.device_id}": sig}}}

    def device_keys(self) -> dict[str, Any]:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM, MEGOLM],
                "keys": {
                    f"curve25519:{self.device_id}": self.curve25519,
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    def one_time_keys(self, n: int) -> dict[str, Any]:
        self.account.generate_one_time_keys(n)
        keys = {
            f"signed_curve25519:{kid}": self.sign({"key": key.to_base64()})
            for kid, key in self.account.one_time_keys.items()
        }
        self.account.mark_keys_as_published()
        return keys

    def fallback_key(self) -> dict[str, Any]:
        self.account.generate_fallback_key()
        kid, key = next(iter(self.account.fallback_key.items()))
        return {f"signed_curve25519:{kid}": self.sign({"key": key.to_base64(), "fallback": True})}

    # --- Olm (to-device)
    def olm_encrypt(self, their_curve: str, their_otk: str, payload: dict[str, Any]) -> dict:
        session = self.sessions.get(their_curve)
        if session is None:
            session = self.account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_base64(their_curve),
                vodozemac.Curve25519PublicKey.from_base64(their_otk),
            )
            self.sessions[their_curve] = session
        msg_type, body = session.encrypt(json.dumps(payload).encode()).to_parts()
        return {
            "algorithm": OLM,
            "sender_key": self.curve25519,
            "ciphertext": {their_curve: {"type": msg_type, "body": b64(body)}},
        }

    def olm_decrypt(self, content: dict[str, Any]) -> dict[str, Any]:
        part = content["ciphertext"][self.curve25519]
        message = vodozemac.AnyOlmMessage.from_parts(part["type"], unb64(part["body"]))
        sender = content["sender_key"]
        if part["type"] == 0 and sender not in self.sessions:
            session, plaintext = self.account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_base64(sender), message.to_pre_key()
            )
            self.sessions[sender] = session
        else:
            plaintext = self.sessions[sender].decrypt(message)
        return json.loads(plaintext)

    # --- Megolm (rooms)
    def megolm_session(self) -> vodozemac.GroupSession:
        return vodozemac.GroupSession()

    def room_key_payload(self, room_id: str, group: vodozemac.GroupSession) -> dict:
        return {
            "type": "m.room_key",
            "content": {
                "algorithm": MEGOLM,
                "room_id": room_id,
                "session_id": group.session_id,
                "session_key": group.session_key.to_base64(),
            },
            "sender": self.user_id,
            "sender_device": self.device_id,
            "keys": {"ed25519": self.ed25519},
        }

    def megolm_encrypt(self, group: vodozemac.GroupSession, room_id: str, body: str) -> dict:
        plaintext = json.dumps(
            {
                "type": "m.room.message",
                "room_id": room_id,
                "content": {"msgtype": "m.text", "body": body},
            }
        ).encode()
        return {
            "algorithm": MEGOLM,
            "sender_key": self.curve25519,
            "device_id": self.device_id,
            "session_id": group.session_id,
            "ciphertext": group.encrypt(plaintext).to_base64(),
        }

    def accept_room_key(self, payload: dict[str, Any]) -> None:
        content = payload["content"]
        self.inbound_groups[content["session_id"]] = vodozemac.InboundGroupSession(
            vodozemac.SessionKey(content["session_key"])
        )

    def megolm_decrypt(self, content: dict[str, Any]) -> dict[str, Any]:
        group = self.inbound_groups[content["session_id"]]
        message = vodozemac.MegolmMessage.from_base64(content["ciphertext"])
        return json.loads(group.decrypt(message).plaintext)


class CrossSigning:
    """A user's cross-signing keys (master, self-signing, user-signing), each an Ed25519 pair
    (vodozemac makes them as accounts: an account's ed25519 key signs like any other)."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = vodozemac.Account()
        self.self_signing = vodozemac.Account()
        self.user_signing = vodozemac.Account()

    @staticmethod
    def pub(account: vodozemac.Account) -> str:
        return account.ed25519_key.to_base64()

    def sign_with(self, account: vodozemac.Account, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` with one more signature: `account`'s, under this user's id."""
        sig = account.sign(canonical(obj)).to_base64()
        sigs = {k: dict(v) for k, v in obj.get("signatures", {}).items()}
        sigs.setdefault(self.user_id, {})[f"ed25519:{self.pub(account)}"] = sig
        return {**obj, "signatures": sigs}

    def key(self, usage: str, account: vodozemac.Account) -> dict[str, Any]:
        pub = self.pub(account)
        return {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}

    def upload_body(self, device: OlmDevice | None = None) -> dict[str, Any]:
        """keys/device_signing/upload as the SDK makes it: the master key signed by the
        device, the other two by the master."""
        master = self.key("master", self.master)
        return {
            "master_key": device.sign(master) if device else master,
            "self_signing_key": self.sign_with(
                self.master, self.key("self_signing", self.self_signing)
            ),
            "user_signing_key": self.sign_with(
                self.master, self.key("user_signing", self.user_signing)
            ),
        }
