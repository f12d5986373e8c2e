"""What a CBLINE join costs the database: a fixed number of statements, whatever the number
of members (they come from Redis, and are described in one query)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.backends.utils import CursorWrapper

from tests.voice.helpers import assert_alive, connect, expect, joined

pytestmark = pytest.mark.django_db(transaction=True)

# A first join: the admission (channel, the user's ban and membership in one query), the
# membership's insert (one statement, no savepoint), then the member list (profiles,
# moderators and mutes in one statement). None of it grows with the members. The first join
# of a channel in a process (or after its sanctions changed) also reads the channel's bans,
# for its presses (voice.floor.bans_prepare): one statement more, whatever the members.
JOIN_QUERIES = 3


async def _join_statements(comm: Any, channel: Any, monkeypatch: Any) -> list[str]:
    # The consumer's ORM calls run in whichever thread Channels gives them: count every
    # statement Django executes, in any thread, from the message to the answer.
    sql: list[str] = []
    execute = CursorWrapper.execute

    def counting(self: CursorWrapper, query: str, params: Any = None) -> Any:
        # SQLite (the embedded default) sends its BEGIN as a statement; PostgreSQL does not.
        if not query.startswith("BEGIN"):
            sql.append(query)
        return execute(self, query, params)

    await assert_alive(comm)  # connect() returns at accept: let the connect handler finish
    monkeypatch.setattr(CursorWrapper, "execute", counting)
    await comm.send_json_to({"type": "channel.join", "channel_id": channel.pk})
    await expect(comm, "channel.joined")
    monkeypatch.undo()
    return sql


async def test_join_costs_the_same_few_queries_in_a_small_and_a_crowded_channel(
    amake_user, make_channel, monkeypatch
):
    owner = await amake_user()
    small, crowded = await make_channel(owner), await make_channel(owner)
    crowd = [await joined(await amake_user(), crowded) for _ in range(6)]
    first = await connect(await amake_user())
    alone = await _join_statements(first, small, monkeypatch)
    second = await connect(await amake_user())
    among = await _join_statements(second, crowded, monkeypatch)
    third = await connect(await amake_user())
    again = await _join_statements(third, small, monkeypatch)
    assert len(among) == len(again) == JOIN_QUERIES, (among, again)
    # The process's first join of `small` read its bans once, for every press to come.
    assert len(alone) == JOIN_QUERIES + 1, alone
    assert "voice_channelsanction" in alone[-1], alone
    for comm in (*crowd, first, second, third):
        await comm.disconnect()
