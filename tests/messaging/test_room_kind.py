"""A 1:1 chat says so in its m.room.create event (our addition to the spec, asked by the
browser client): the invited side titles it by the other person and hides group management."""

from __future__ import annotations

import pytest

from messaging import selectors, services
from messaging.ids import mxid
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("is_direct", [True, False])
def test_create_event_tells_a_direct_chat_from_a_group(is_direct):
    creator, other = UserFactory(), UserFactory()
    room = services.room_create(
        creator=creator,
        name="" if is_direct else "Club",
        invite=[mxid(other.pk)],
        is_direct=is_direct,
    )
    create = next(e for e in selectors.room_state(room) if e["type"] == "m.room.create")
    assert create["content"] == {"creator": mxid(creator.pk), "is_direct": is_direct}
