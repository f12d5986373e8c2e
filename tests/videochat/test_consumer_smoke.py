import pytest

from tests.videochat.helpers import close_all, pair, ready

pytestmark = pytest.mark.django_db(transaction=True)


async def test_pair(amake_user):
    a, _ = await ready(await amake_user())
    b, _ = await ready(await amake_user())
    fa, fb = await pair(a, b)
    assert {fa["role"], fb["role"]} == {"offer", "answer"}
    assert fa["match_id"] == fb["match_id"]
    await close_all(a, b)
