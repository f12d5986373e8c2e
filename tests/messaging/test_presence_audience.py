"""Who may see whom online: only contacts (people who share a room), never across a block in
either direction, never a deleted account. On the live presence socket and over HTTP. And a
deleted account's name is gone from its rooms at once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from accounts.services import account_delete_request
from messaging.ids import mxid
from messaging.services import ignored_users_set, room_leave
from realtime.keys import presence_key
from realtime.redis import get_redis
from tests.conftest import aconnected
from tests.factories import make_contacts
from tests.messaging.test_api import Browser

pytestmark = pytest.mark.django_db(transaction=True)

amake_contacts = sync_to_async(make_contacts)
ablock = sync_to_async(ignored_users_set)


async def watching(user: Any, target: Any) -> Any:
    """A presence socket of `user` that watches `target` (its first answer read)."""
    comm = await aconnected("/ws/presence/", user)
    await comm.send_json_to({"type": "presence.watch", "user_ids": [target.pk]})
    first = await comm.receive_json_from()
    return comm, first["statuses"][str(target.pk)]


async def test_only_a_contact_sees_a_user_come_online(amake_user):
    target, contact, stranger = await amake_user(), await amake_user(), await amake_user()
    blocked, blocker = await amake_user(), await amake_user()
    # The blocked pairs share a room too: only the block keeps them apart.
    await amake_contacts(target, contact, blocked, blocker)
    await ablock(user=target, ignored=[mxid(blocked.pk)])
    await ablock(user=blocker, ignored=[mxid(target.pk)])

    watchers = {}
    for name, user in [
        ("contact", contact),
        ("stranger", stranger),
        ("blocked", blocked),
        ("blocker", blocker),
    ]:
        comm, online = await watching(user, target)
        assert online is False
        watchers[name] = comm

    t = await aconnected("/ws/presence/", target)
    assert await watchers["contact"].receive_json_from() == {
        "type": "presence",
        "statuses": {str(target.pk): True},
    }
    for name in ("stranger", "blocked", "blocker"):
        assert await watchers[name].receive_nothing(timeout=0.3), name

    # Asked while the target is online, only the contact is told so.
    for name, comm in watchers.items():
        await comm.send_json_to({"type": "presence.watch", "user_ids": [target.pk]})
        answer = (await comm.receive_json_from())["statuses"]
        assert answer == {str(target.pk): name == "contact"}, name

    await t.disconnect()
    assert (await watchers["contact"].receive_json_from())["statuses"] == {str(target.pk): False}
    for name in ("stranger", "blocked", "blocker"):
        assert await watchers[name].receive_nothing(timeout=0.3), name
    for comm in watchers.values():
        await comm.disconnect()


@pytest.mark.parametrize("who_blocks", ["target", "watcher"])
async def test_a_block_after_the_watch_ends_it(amake_user, who_blocks):
    target, watcher = await amake_user(), await amake_user()
    await amake_contacts(target, watcher)
    t = await aconnected("/ws/presence/", target)
    w, online = await watching(watcher, target)
    assert online is True

    blocker, blocked = (target, watcher) if who_blocks == "target" else (watcher, target)
    await ablock(user=blocker, ignored=[mxid(blocked.pk)])
    assert (await w.receive_json_from())["statuses"] == {str(target.pk): False}

    # Coming and going is no longer announced to the watcher.
    await t.disconnect()
    t = await aconnected("/ws/presence/", target)
    assert await w.receive_nothing(timeout=0.3)
    await t.disconnect()
    await w.disconnect()


async def test_leaving_the_last_shared_room_ends_the_watch(amake_user):
    target, watcher = await amake_user(), await amake_user()
    room = await amake_contacts(target, watcher)
    t = await aconnected("/ws/presence/", target)
    w, online = await watching(watcher, target)
    assert online is True

    await sync_to_async(room_leave)(user=target, room_id=room.room_id)
    assert (await w.receive_json_from())["statuses"] == {str(target.pk): False}
    await t.disconnect()
    assert await w.receive_nothing(timeout=0.3)
    await w.disconnect()


def live_socket_of(user: Any) -> None:
    """What presence.socket_up records for a live socket (here, one on another server)."""
    get_redis().zadd(presence_key(user.pk), {"sock": time.time() + 60})


@pytest.mark.parametrize("who_blocks", ["alice", "bob"])
def test_http_presence_is_refused_across_a_block(who_blocks):
    alice, bob = Browser(), Browser()
    alice.ok("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})
    live_socket_of(bob.user)
    assert alice.ok("GET", f"presence/{bob.mxid}/status") == {"presence": "online"}

    blocker, blocked = (alice, bob) if who_blocks == "alice" else (bob, alice)
    ignored_users_set(user=blocker.user, ignored=[blocked.mxid])
    assert alice.call("GET", f"presence/{bob.mxid}/status").status_code == 404


def test_a_deleted_account_shows_no_presence():
    alice, bob = Browser(), Browser()
    alice.ok("POST", "createRoom", {"invite": [bob.mxid], "is_direct": True})
    live_socket_of(bob.user)
    assert alice.ok("GET", f"presence/{bob.mxid}/status") == {"presence": "online"}

    account_delete_request(user=bob.user)
    live_socket_of(bob.user)  # say a socket's entry outlived it for a moment
    assert alice.call("GET", f"presence/{bob.mxid}/status").status_code == 404


async def test_a_deleted_account_is_offline_on_the_socket(amake_user):
    target, watcher = await amake_user(), await amake_user()
    await amake_contacts(target, watcher)
    await sync_to_async(account_delete_request)(user=target)
    await sync_to_async(live_socket_of)(target)
    w, online = await watching(watcher, target)
    assert online is False
    await w.disconnect()


def test_a_deleted_member_shows_as_deleted_account_at_once():
    alice, bob = Browser(), Browser(nickname="bobby")
    room_id = alice.ok("POST", "createRoom", {"invite": [bob.mxid], "name": "g"})["room_id"]
    members = alice.ok("GET", f"rooms/{room_id}/joined_members")["joined"]
    assert members[bob.mxid] == {"display_name": "bobby"}

    account_delete_request(user=bob.user)  # purged only after the grace period
    members = alice.ok("GET", f"rooms/{room_id}/joined_members")["joined"]
    assert members[bob.mxid] == {"display_name": "Deleted account"}
    state = alice.ok("GET", f"rooms/{room_id}/state")
    names = {
        e["state_key"]: e["content"]["displayname"] for e in state if e["type"] == "m.room.member"
    }
    assert names == {alice.mxid: alice.user.profile.nickname, bob.mxid: "Deleted account"}
    assert "bobby" not in json.dumps(state)


def test_a_members_photo_is_shown_to_the_room_until_the_account_is_deleted():
    """The policy: "your name and photo are visible to people you talk with". The member
    state and the member list carry the profile photo's address (readable by signed-in
    users only); a deleted account's photo goes at once with its name."""
    alice, bob = Browser(), Browser(nickname="bobby")
    bob.user.profile.photo = "profiles/2026/12/bobby.jpg"
    bob.user.profile.save(update_fields=["photo"])
    room_id = alice.ok("POST", "createRoom", {"invite": [bob.mxid], "name": "g"})["room_id"]
    photo = f"{settings.MEDIA_URL}profiles/2026/12/bobby.jpg"
    members = alice.ok("GET", f"rooms/{room_id}/joined_members")["joined"]
    assert members[bob.mxid] == {"display_name": "bobby", "avatar_url": photo}
    assert members[alice.mxid] == {"display_name": alice.user.profile.nickname}  # no photo
    state = alice.ok("GET", f"rooms/{room_id}/state")
    avatars = {
        e["state_key"]: e["content"].get("avatar_url")
        for e in state
        if e["type"] == "m.room.member"
    }
    assert avatars == {alice.mxid: None, bob.mxid: photo}

    account_delete_request(user=bob.user)
    members = alice.ok("GET", f"rooms/{room_id}/joined_members")["joined"]
    assert members[bob.mxid] == {"display_name": "Deleted account"}
    assert "bobby.jpg" not in json.dumps(alice.ok("GET", f"rooms/{room_id}/state"))
