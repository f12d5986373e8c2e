"""CallsApp test kit: people with devices whose keys are real (vodozemac), and their sync
sockets."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import Device, User
from messaging.consumers import MessagingConsumer
from messaging.ids import mxid
from messaging.schemas import DeviceKeysBody
from messaging.services import keys_upload
from tests.factories import DeviceFactory, UserFactory
from tests.messaging.olm import OlmDevice


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


@dataclass
class Member:
    user: User
    device: Device
    olm: OlmDevice

    @property
    def mxid(self) -> str:
        return mxid(self.user.pk)


def member(
    user: User | None = None, *, otks: int = 5, fallback: bool = True, **profile: Any
) -> Member:
    """A user's CallsApp device with its keys uploaded (a second call with the same user
    adds a device)."""
    if user is None:
        user = UserFactory(**{f"profile__{k}": v for k, v in profile.items()})
    device = DeviceFactory(user=user, device_id=new_device_id())
    olm = OlmDevice(mxid(user.pk), device.device_id)
    keys_upload(
        device=device,
        device_keys=DeviceKeysBody.model_validate(olm.device_keys()),
        one_time_keys=olm.one_time_keys(otks) if otks else None,
        fallback_keys=olm.fallback_key() if fallback else None,
    )
    return Member(user, device, olm)


@pytest.fixture
def people(transactional_db: None) -> Any:
    return member


def with_identity(app: Any, user: Any, device: Any) -> Any:
    identity = {"user": user, "device": device, "session_key": device.session_key}

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await app({**scope, **identity}, receive, send)

    return wrapped


async def sync_socket(m: Member) -> WebsocketCommunicator:
    """The device's /ws/messaging/ socket, connected and settled."""
    app = with_identity(MessagingConsumer.as_asgi(), m.user, m.device)
    comm = WebsocketCommunicator(app, "/ws/messaging/")
    ok, _ = await comm.connect()
    assert ok
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    return comm


async def hello(comm: WebsocketCommunicator, last_seq: int = 0) -> list[dict[str, Any]]:
    """hello{last_seq}; the sync frames of the backlog (caught_up is not returned)."""
    await comm.send_json_to({"type": "hello", "last_seq": last_seq})
    frames = []
    while True:
        frame = await comm.receive_json_from()
        if frame["type"] == "caught_up":
            return frames
        frames.append(frame)


async def settle(comm: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Every frame sent before has been handled; returns what was pushed meanwhile."""
    await comm.send_json_to({"type": "ping"})
    pushed = []
    while (frame := await comm.receive_json_from()) != {"type": "pong"}:
        pushed.append(frame)
    return pushed


def timeline(frames: list[dict[str, Any]], room_id: str) -> list[dict[str, Any]]:
    return [
        e
        for f in frames
        for e in f["sync"]
        .get("rooms", {})
        .get("join", {})
        .get(room_id, {})
        .get("timeline", {})
        .get("events", [])
    ]


def to_device(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for f in frames for e in f["sync"].get("to_device", {}).get("events", [])]


amember = sync_to_async(member)
