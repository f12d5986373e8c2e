"""A connect's Redis writes in one script (realtime.opening): an admitted socket is in its
groups and counted online, with its process; a refused one leaves no trace."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer

from accounts.models import Device
from realtime import closecodes, liveness, opening
from realtime.keys import device_group, presence_key, process_sockets_key, user_group
from realtime.redis import get_async_redis
from tests.conftest import aconnected
from tests.realtime.test_connect_limits import first_reply, presence_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def members(group: str) -> list[bytes]:
    layer = get_channel_layer()
    return list(await get_async_redis().zrange(layer._group_key(group), 0, -1))


async def test_the_test_settings_take_the_one_script_path():
    assert opening.supported()  # else the tests below would test the step-by-step path


async def test_an_admitted_socket_is_in_its_groups_and_online_a_refused_one_nowhere(
    amake_user, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 1
    user = await amake_user()
    comm = await aconnected("/ws/presence/", user)
    [socket] = await members(user_group(user.pk))
    r = get_async_redis()
    assert await r.zrange(presence_key(user.pk), 0, -1) == [socket]
    assert await r.hexists(process_sockets_key(liveness.process_id()), socket)
    device = await Device.objects.aget(user=user)
    assert await members(device_group(device.pk)) == [socket]

    refused = await presence_socket(user)
    assert await first_reply(refused) == {"type": "websocket.close", "code": closecodes.TRY_LATER}
    assert await members(user_group(user.pk)) == [socket]
    assert await r.zrange(presence_key(user.pk), 0, -1) == [socket]
    await refused.disconnect()

    await comm.disconnect()
    assert await members(user_group(user.pk)) == []
    assert await r.zrange(presence_key(user.pk), 0, -1) == []
