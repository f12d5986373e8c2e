"""A reconnect storm is every client's connect + channel.join at once (issue 16 item 6): each
costs a fixed number of database queries, whatever the channel's size."""

from __future__ import annotations

from tests.conftest import acommunicator
from tests.voice.helpers import join, joined

# The session, then device + user + profile in one join (accounts.selectors.session_identity).
CONNECT_QUERIES = 2
# Measured now: nickname and channel read twice each, the sanction check, membership
# (exists, get, insert in a savepoint), the connection log row, and the member list's
# profiles, moderators and bans (bounded by MEMBER_LIST_LIMIT, not the channel's size).
JOIN_QUERIES = 14


async def test_connect_and_join_cost_fixed_queries(amake_user, make_channel, queries):
    owner = await amake_user()
    channel = await make_channel(owner)
    present = [await joined(await amake_user(), channel) for _ in range(2)]
    costs = []
    for extra in (0, 6):  # a bigger channel must not cost more
        for _ in range(extra):
            present.append(await joined(await amake_user(), channel))
        user = await amake_user()
        comm = await acommunicator("/ws/cbline/", user)  # the login: session and device
        queries.clear()
        ok, _ = await comm.connect(timeout=5)
        assert ok
        connected = list(queries)
        queries.clear()
        await join(comm, channel)
        costs.append((len(connected), len(queries), connected, list(queries)))
        present.append(comm)
    for comm in present:
        await comm.disconnect()
    (c1, j1, cq, jq), (c2, j2, _, _) = costs
    assert (c1, j1) == (c2, j2)
    assert c1 <= CONNECT_QUERIES, cq
    assert j1 <= JOIN_QUERIES, jq
