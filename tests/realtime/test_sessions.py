"""Sockets authenticate as (user, device, session) and end when those do: per-session logout
(tests/realtime/test_base_consumer.py), password change, deactivation, forget device, sign
out everywhere; and the cost of a connect in queries. Real ASGI app, Redis and sessions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db.backends.utils import CursorWrapper
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import Device, User
from accounts.selectors import DEVICE_SESSION_KEY
from tests.conftest import acommunicator, aconnected, alogin_session

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/presence/"


async def usable(comm: Any) -> bool:
    await comm.send_json_to({"type": "ping"})
    return await comm.receive_json_from(timeout=3) == {"type": "pong"}


async def closed_with(comm: Any) -> int:
    out = await comm.receive_output(timeout=3)
    assert out["type"] == "websocket.close", out
    return int(out["code"])


async def refused(session_key: str) -> int:
    """Connect with this session cookie; the close code the server answers with."""
    comm = await acommunicator(PATH, session_key=session_key)
    ok, _ = await comm.connect()
    assert ok  # accepted only to deliver the close code
    return await closed_with(comm)


async def test_a_session_without_a_device_is_refused(amake_user):
    user = await amake_user()

    def bare_session() -> str:
        store = SessionStore()
        store.update(
            {
                "_auth_user_id": str(user.pk),
                "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": user.get_session_auth_hash(),
            }
        )
        store.create()
        return store.session_key  # type: ignore[return-value]

    assert await refused(await sync_to_async(bare_session)()) == 4401


async def test_an_expired_session_is_refused(amake_user):
    key, _ = await alogin_session(await amake_user())
    await Session.objects.filter(session_key=key).aupdate(
        expire_date=timezone.now() - dt.timedelta(seconds=1)
    )
    assert await refused(key) == 4401


async def test_a_session_cannot_use_another_sessions_device(amake_user):
    user = await amake_user()
    key_a, _ = await alogin_session(user)
    _, device_b = await alogin_session(user)

    def point_at(key: str, device: Device) -> None:
        store = SessionStore(key)
        store[DEVICE_SESSION_KEY] = device.pk
        store.save()

    await sync_to_async(point_at)(key_a, device_b)
    assert await refused(key_a) == 4401


async def test_the_socket_knows_its_device(amake_user):
    from realtime.consumers import BaseConsumer

    seen: list[tuple[Any, ...]] = []
    original = BaseConsumer.on_connect

    async def spy(self: BaseConsumer) -> None:
        seen.append((self.user_id, self.device_pk, self.device_id, self.session_key))
        await original(self)

    user = await amake_user()
    key, device = await alogin_session(user)
    BaseConsumer.on_connect = spy  # type: ignore[method-assign]
    try:
        comm = await aconnected(PATH, session_key=key)
    finally:
        BaseConsumer.on_connect = original  # type: ignore[method-assign]
    assert seen == [(user.pk, device.pk, device.device_id, key)]
    await comm.disconnect()


async def test_password_change_keeps_this_sessions_sockets_and_ends_the_others(amake_user):
    user, bystander = await amake_user(), await amake_user()
    client = Client()
    await sync_to_async(client.force_login)(user)
    here_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    here = await aconnected(PATH, session_key=here_key)
    elsewhere_key, _ = await alogin_session(user)
    elsewhere = await aconnected(PATH, session_key=elsewhere_key)
    other = await aconnected(PATH, bystander)

    response = await sync_to_async(client.post)(
        "/accounts/password/change/",
        {
            "oldpassword": "correct-horse-battery",
            "password1": "a-new-pass-phrase",
            "password2": "a-new-pass-phrase",
        },
    )
    assert response.status_code == 302
    # The other session ended: its socket is closed for good and cannot come back.
    assert await closed_with(elsewhere) == 4001
    assert await refused(elsewhere_key) == 4401
    # The session that changed the password keeps its socket, and (under the new key Django
    # gave it) connects again as before.
    assert await usable(here)
    new_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != here_key
    again = await aconnected(PATH, session_key=new_key)
    assert await usable(other)
    for comm in (here, again, other):
        await comm.disconnect()


async def test_a_password_set_by_staff_closes_every_socket(amake_user):
    user = await amake_user()
    key, _ = await alogin_session(user)
    comm = await aconnected(PATH, session_key=key)

    def staff_sets_password() -> None:
        u = User.objects.get(pk=user.pk)
        u.set_password("set-by-staff-123")
        u.save()

    await sync_to_async(staff_sets_password)()
    # "Come back and be checked": the session's hash no longer matches, so it is refused.
    assert await closed_with(comm) == 4002
    assert await refused(key) == 4401


async def test_deactivation_closes_every_socket_for_good(amake_user):
    user, bystander = await amake_user(), await amake_user()
    key, _ = await alogin_session(user)
    first, second = await aconnected(PATH, session_key=key), await aconnected(PATH, user)
    other = await aconnected(PATH, bystander)

    def deactivate() -> None:
        u = User.objects.get(pk=user.pk)
        u.is_active = False
        u.save()

    await sync_to_async(deactivate)()
    assert await closed_with(first) == 4403
    assert await closed_with(second) == 4403
    assert await refused(key) == 4401
    assert not await sync_to_async(Device.objects.filter(user=user).exists)()
    assert await usable(other)
    await other.disconnect()


async def test_forget_device_closes_that_devices_sockets_only(amake_user):
    user = await amake_user()
    lost_key, lost = await alogin_session(user)
    kept_key, _ = await alogin_session(user)
    gone = await aconnected(PATH, session_key=lost_key)
    kept = await aconnected(PATH, session_key=kept_key)

    assert await sync_to_async(services.device_forget)(user=user, device_pk=lost.pk)
    assert await closed_with(gone) == 4001
    assert await refused(lost_key) == 4401
    assert await usable(kept)
    await kept.disconnect()


async def test_sign_out_everywhere_closes_every_socket(amake_user):
    user, bystander = await amake_user(), await amake_user()
    socks = [await aconnected(PATH, user) for _ in range(3)]
    other = await aconnected(PATH, bystander)
    await sync_to_async(services.sessions_end_all)(user=user)
    for comm in socks:
        assert await closed_with(comm) == 4001
    assert await usable(other)
    await other.disconnect()


async def test_connect_costs_one_query(amake_user, monkeypatch):
    """The session with its device + user + profile, in one statement (every socket of a
    reconnect storm reads it). The presence check, the device's last-seen and the
    online-status privacy setting ride on it."""
    user = await amake_user()
    key, _ = await alogin_session(user)
    comm = await acommunicator(PATH, session_key=key)
    # The consumer's ORM calls run in whichever thread Channels gives the connection: count
    # every statement Django executes, in any thread.
    sql: list[str] = []
    execute = CursorWrapper.execute

    def counting(self: CursorWrapper, query: str, params: Any = None) -> Any:
        sql.append(query)
        return execute(self, query, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    ok, _ = await comm.connect()
    assert ok and await usable(comm)  # the pong comes after connect() has finished
    monkeypatch.undo()
    assert len(sql) == 1, sql
    assert "django_session" in sql[0] and "accounts_device" in sql[0]
    await comm.disconnect()
