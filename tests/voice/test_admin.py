"""Staff act on CBLINE through the admin, and the admin goes through the same services as a
moderator's socket: a ban made in the channel's sanctions inline takes effect on the very
next audio packet, and lifting it there lets the member back."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.voice.helpers import (
    binaries,
    expect,
    expect_each,
    expect_error,
    joined,
    packet,
    take_floor,
)
from voice import services
from voice.models import Channel, ChannelMembership, ChannelSanction, SanctionKind
from voice.selectors import floor_holder

pytestmark = pytest.mark.django_db(transaction=True)


def _change_form(channel: Channel, sanctions: list[dict[str, Any]]) -> dict[str, Any]:
    """The POST the channel's admin change form makes, with `sanctions` as the inline rows."""
    existing = list(ChannelSanction.objects.filter(channel=channel).order_by("pk"))
    data: dict[str, Any] = {
        "name": channel.name,
        "description": channel.description,
        "range_km": channel.range_km,
        "creator": channel.creator_id or "",
        "moderators": list(channel.moderators.values_list("pk", flat=True)),
        "new_password": "",
        "sanctions-TOTAL_FORMS": len(sanctions),
        "sanctions-INITIAL_FORMS": len(existing),
        "sanctions-MIN_NUM_FORMS": 0,
        "sanctions-MAX_NUM_FORMS": 1000,
    }
    for i, row in enumerate(sanctions):
        prefix = f"sanctions-{i}-"
        data[prefix + "channel"] = channel.pk
        data[prefix + "id"] = row.get("id", "")
        data[prefix + "user"] = row["user"]
        data[prefix + "kind"] = row["kind"]
        data[prefix + "until_0"] = row.get("until_0", "")
        data[prefix + "until_1"] = row.get("until_1", "")
        if row.get("DELETE"):
            data[prefix + "DELETE"] = "on"
    return data


async def test_admin_ban_takes_effect_on_the_next_audio_packet(amake_user, make_channel, client):
    staff = await amake_user(is_staff=True, is_superuser=True)
    talker, banned, other = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct, cb, co = [await joined(u, channel) for u in (talker, banned, other)]
    tx = await take_floor(ct)
    await ct.send_to(bytes_data=packet(tx, 0))
    assert len(await binaries(cb)) == 1 and len(await binaries(co)) == 1

    @sync_to_async
    def ban_in_admin() -> None:
        client.force_login(staff)
        resp = client.post(
            f"/admin/voice/channel/{channel.pk}/change/",
            _change_form(channel, [{"user": banned.pk, "kind": SanctionKind.BAN}]),
        )
        assert resp.status_code == 302, resp.content.decode()[:3000]

    await ban_in_admin()
    # The banned member is told at once and leaves; the next packet does not reach them.
    assert (await expect(cb, "moderated"))["action"] == "banned"
    await expect(cb, "channel.left")
    for seq in (1, 2, 3):
        await ct.send_to(bytes_data=packet(tx, seq))
    assert await binaries(cb) == []
    assert len(await binaries(co)) == 3
    sanction = await sync_to_async(ChannelSanction.objects.get)(channel=channel, user=banned)
    assert sanction.kind == SanctionKind.BAN and sanction.created_by_id == staff.pk
    assert not await sync_to_async(
        ChannelMembership.objects.filter(channel=channel, user=banned).exists
    )()
    await cb.send_json_to({"type": "channel.join", "channel_id": channel.pk})
    assert (await expect(cb, "error"))["code"] == "banned"

    @sync_to_async
    def lift_in_admin() -> None:
        data = _change_form(
            channel,
            [{"id": sanction.pk, "user": banned.pk, "kind": SanctionKind.BAN, "DELETE": True}],
        )
        resp = client.post(f"/admin/voice/channel/{channel.pk}/change/", data)
        assert resp.status_code == 302, resp.content.decode()[:3000]

    await lift_in_admin()
    assert not await sync_to_async(ChannelSanction.objects.filter(channel=channel).exists)()
    await cb.send_json_to({"type": "channel.join", "channel_id": channel.pk})
    await expect(cb, "channel.joined")
    for comm in (ct, cb, co):
        await comm.disconnect()


async def test_admin_mute_stops_the_talker_on_the_spot(amake_user, make_channel, client):
    staff = await amake_user(is_staff=True, is_superuser=True)
    talker, listener = await amake_user(), await amake_user()
    channel = await make_channel(listener)
    ct, cl = await joined(talker, channel), await joined(listener, channel)
    tx = await take_floor(ct)

    @sync_to_async
    def mute_in_admin() -> None:
        client.force_login(staff)
        rows = [{"user": talker.pk, "kind": SanctionKind.MUTE}]
        resp = client.post(
            f"/admin/voice/channel/{channel.pk}/change/", _change_form(channel, rows)
        )
        assert resp.status_code == 302, resp.content.decode()[:3000]

    await mute_in_admin()
    assert (await expect(ct, "moderated"))["action"] == "muted"
    got = await expect_each(cl, "floor.released", "member.updated")
    assert got["floor.released"]["tx_id"] == tx and got["member.updated"]["member"]["muted"]
    await ct.send_to(bytes_data=packet(tx, 1))
    assert await binaries(cl) == []
    for comm in (ct, cl):
        await comm.disconnect()


async def test_admin_refuses_to_sanction_the_channel_creator(amake_user, make_channel, client):
    staff = await amake_user(is_staff=True, is_superuser=True)
    creator = await amake_user()
    channel = await make_channel(creator)

    @sync_to_async
    def ban_creator() -> Any:
        client.force_login(staff)
        rows = [{"user": creator.pk, "kind": SanctionKind.BAN}]
        return client.post(
            f"/admin/voice/channel/{channel.pk}/change/", _change_form(channel, rows)
        )

    resp = await ban_creator()
    assert resp.status_code == 200  # the form again, with the refusal on it
    assert "creator cannot be moderated" in resp.content.decode()
    assert not await sync_to_async(ChannelSanction.objects.filter(channel=channel).exists)()


async def test_a_ban_that_bypassed_the_services_still_keeps_audio_away(amake_user, make_channel):
    """A sanction written straight to the table (a shell, a data fix) tells no socket, but
    the next transmission's recipients leave the banned member out."""
    talker, banned = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct, cb = await joined(talker, channel), await joined(banned, channel)
    await sync_to_async(ChannelSanction.objects.create)(
        channel=channel, user=banned, kind=SanctionKind.BAN
    )
    tx = await take_floor(ct)
    for seq in range(3):
        await ct.send_to(bytes_data=packet(tx, seq))
    assert await binaries(cb) == []
    for comm in (ct, cb):
        await comm.disconnect()


def _channel_form(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "",
        "description": "",
        "range_km": 0,
        "creator": "",
        "moderators": [],
        "new_password": "",
        "sanctions-TOTAL_FORMS": 0,
        "sanctions-INITIAL_FORMS": 0,
        "sanctions-MIN_NUM_FORMS": 0,
        "sanctions-MAX_NUM_FORMS": 1000,
    }
    data.update(fields)
    return data


def test_a_channel_added_in_the_admin_is_made_by_the_service(make_user, client) -> None:  # type: ignore[no-untyped-def]
    """As channel_create makes it: name tidied, creator a member and moderator, password
    hashed the channel way."""
    staff, creator = make_user(is_staff=True, is_superuser=True), make_user()
    client.force_login(staff)
    resp = client.post(
        "/admin/voice/channel/add/",
        _channel_form(name="  Night   shift ", creator=creator.pk, new_password="sesame-42"),
    )
    assert resp.status_code == 302, resp.content.decode()[:3000]
    channel = Channel.objects.get()
    assert channel.name == "Night shift"
    assert ChannelMembership.objects.filter(channel=channel, user=creator).exists()
    assert list(channel.moderators.values_list("pk", flat=True)) == [creator.pk]
    assert channel.password_hash.startswith(services.CHANNEL_HASH_ALGORITHM + "$")


def test_a_channel_edited_in_the_admin_keeps_the_services_rules(make_user, client) -> None:  # type: ignore[no-untyped-def]
    staff, creator = make_user(is_staff=True, is_superuser=True), make_user()
    client.force_login(staff)
    services.channel_create(creator=creator, name="Taken")
    channel = services.channel_create(creator=creator, name="Mine", password="old-pass")
    url = f"/admin/voice/channel/{channel.pk}/change/"
    base = {"creator": creator.pk, "moderators": [creator.pk]}

    resp = client.post(url, _channel_form(name="tAKEN", **base))
    assert resp.status_code == 200 and "a channel with that name exists" in resp.content.decode()
    resp = client.post(url, _channel_form(name="Mine", range_km=30_000, **base))
    assert resp.status_code == 200 and "range is 0 (unlimited) to 20000 km" in resp.content.decode()
    channel.refresh_from_db()
    assert (channel.name, channel.range_km) == ("Mine", 0)

    resp = client.post(url, _channel_form(name="  Mine,   renamed ", range_km=30, **base))
    assert resp.status_code == 302, resp.content.decode()[:3000]
    channel.refresh_from_db()
    assert (channel.name, channel.range_km) == ("Mine, renamed", 30)
    assert services.channel_password_verify("old-pass", channel.password_hash)  # kept
    resp = client.post(url, _channel_form(name="Mine", make_public="on", **base))
    assert resp.status_code == 302
    channel.refresh_from_db()
    assert not channel.is_protected


async def test_a_channel_deleted_in_the_admin_closes_for_everyone_in_it(  # type: ignore[no-untyped-def]
    amake_user, make_channel, client
) -> None:
    """Through services.channel_delete: every socket in the channel is told it left, the
    talker loses the floor, and nothing more is relayed in it."""
    staff = await amake_user(is_staff=True, is_superuser=True)
    talker, listener = await amake_user(), await amake_user()
    channel = await make_channel(talker)
    ct, cl = await joined(talker, channel), await joined(listener, channel)
    tx = await take_floor(ct)

    @sync_to_async
    def delete_in_admin() -> None:
        client.force_login(staff)
        resp = client.post(f"/admin/voice/channel/{channel.pk}/delete/", {"post": "yes"})
        assert resp.status_code == 302, resp.content.decode()[:3000]

    await delete_in_admin()
    # Each socket leaves as it reads the event: a listener may be gone before the talker's
    # floor.released goes out, so only channel.left is promised to everyone.
    assert (await expect(cl, "channel.left"))["channel_id"] == channel.pk
    assert (await expect(ct, "channel.left"))["channel_id"] == channel.pk
    assert await floor_holder(channel.pk) is None
    assert not await sync_to_async(Channel.objects.filter(pk=channel.pk).exists)()
    await ct.send_to(bytes_data=packet(tx, 1))
    assert (await expect_error(ct, "not_in_channel"))["code"] == "not_in_channel"
    assert await binaries(cl) == []
    for comm in (ct, cl):
        await comm.disconnect()
