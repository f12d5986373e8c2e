from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Profile, User
from accounts.selectors import (
    age_on,
    meets_age_rule,
    meets_age_rule_loaded,
    profile_of,
    user_by_email,
)
from accounts.services import age_require, profile_ensure
from realtime.errors import ServiceError
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TODAY = dt.date(2026, 6, 15)


def user_born(birth_date: dt.date | None):  # type: ignore[no-untyped-def]
    user = UserFactory()
    user.profile.birth_date = birth_date
    user.profile.save()
    return user


@pytest.mark.parametrize(
    ("birth_date", "expected"),
    [
        (dt.date(2008, 6, 15), True),  # 18 today
        (dt.date(2008, 6, 16), False),  # 18 tomorrow
        (dt.date(2008, 6, 14), True),
        (dt.date(1950, 1, 1), True),
    ],
)
def test_videochat_needs_18_years(birth_date, expected):
    assert meets_age_rule(user_born(birth_date), "videochat", today=TODAY) is expected


@pytest.mark.parametrize(
    ("birth_date", "expected"),
    [(dt.date(2016, 6, 15), True), (dt.date(2016, 6, 16), False)],
)
def test_callsapp_is_not_for_under_10(birth_date, expected):
    assert meets_age_rule(user_born(birth_date), "messaging", today=TODAY) is expected


def test_unknown_birth_date_passes_only_products_without_a_rule():
    user = user_born(None)
    assert meets_age_rule(user, "voice", today=TODAY)
    assert not meets_age_rule(user, "videochat", today=TODAY)
    assert not meets_age_rule(user, "messaging", today=TODAY)


def test_leap_day_birthday_counts_from_march_first_in_common_years():
    born = dt.date(2008, 2, 29)
    assert age_on(born, dt.date(2026, 2, 28)) == 17
    assert age_on(born, dt.date(2026, 3, 1)) == 18


def test_age_require_refuses_with_a_403_service_error():
    child = user_born(dt.date(dt.date.today().year - 12, 1, 1))  # 12 all year
    age_require(user=child, product="messaging")
    with pytest.raises(ServiceError) as refused:
        age_require(user=child, product="videochat")
    assert (refused.value.code, refused.value.status) == ("age_restricted", 403)


def test_user_by_email_ignores_case_and_deleted_accounts():
    user = UserFactory(email="Mixed@Example.com")
    assert user_by_email("mixed@example.COM") == user
    assert user_by_email("") is None
    user.is_active = False
    user.save()
    assert user_by_email("mixed@example.com") is None


def test_profile_of_reads_and_never_creates_a_row():
    """A selector never writes: a user without a profile row gets the defaults, unsaved."""
    user = UserFactory(profile=None)
    with CaptureQueriesContext(connection) as queries:
        profile = profile_of(user)
    assert profile.pk is None and profile.user_id == user.pk
    assert not any(q["sql"].lstrip().upper().startswith("INSERT") for q in queries)
    assert not Profile.objects.filter(user=user).exists()


def test_profile_ensure_makes_the_row_once():
    user = UserFactory(profile=None)
    first = profile_ensure(user=user)
    assert first.pk is not None and profile_ensure(user=user).pk == first.pk
    assert profile_of(user).pk == first.pk


def test_session_identities_answers_each_key_of_a_batch_in_one_query():
    """The connects of a reconnect storm read their sessions together: each key gets its own
    answer (unknown, expired and a deactivated user's refused) and models of its own, even
    when one session's key is asked twice, in one statement."""
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from accounts.selectors import session_identities
    from tests.conftest import login_session

    alice, bob, carol, dave = (UserFactory() for _ in range(4))
    a_key, a_device = login_session(alice)
    b_key, b_device = login_session(bob)
    c_key, _ = login_session(carol)
    Session.objects.filter(session_key=c_key).update(expire_date=timezone.now())
    d_key, _ = login_session(dave)
    dave.is_active = False
    dave.save()
    keys = [a_key, "no-such-session", b_key, c_key, None, d_key, a_key]
    with CaptureQueriesContext(connection) as ctx:
        found = session_identities(keys)
    assert len(ctx.captured_queries) == 1, ctx.captured_queries
    assert [(u.pk, d.pk if d else None) for u, d in found] == [
        (alice.pk, a_device.pk),
        (None, None),
        (bob.pk, b_device.pk),
        (None, None),
        (None, None),
        (None, None),
        (alice.pk, a_device.pk),
    ]
    first, again = found[0], found[6]
    assert first[0] is not again[0] and first[1] is not again[1]
    assert first[1].user is first[0] and first[0].profile.pk == alice.profile.pk


def test_session_identities_of_no_key_asks_nothing():
    from accounts.selectors import session_identities

    with CaptureQueriesContext(connection) as ctx:
        found = session_identities([None, ""])
    assert [(user.is_authenticated, device) for user, device in found] == [(False, None)] * 2
    assert ctx.captured_queries == []


def test_the_age_rule_on_a_profile_loaded_with_the_user_costs_no_query():
    kid = user_born(dt.date.today() - dt.timedelta(days=365 * 8))
    adult = user_born(dt.date(1990, 1, 1))
    bare = UserFactory(profile=None)
    assert meets_age_rule_loaded(User.objects.get(pk=kid.pk), "messaging") is None  # ask
    loaded = {u.pk: u for u in User.objects.select_related("profile")}
    with CaptureQueriesContext(connection) as queries:
        assert meets_age_rule_loaded(loaded[kid.pk], "messaging") is False
        assert meets_age_rule_loaded(loaded[adult.pk], "messaging") is True
        assert meets_age_rule_loaded(loaded[bare.pk], "messaging") is False  # no birth date
        assert meets_age_rule_loaded(loaded[kid.pk], "voice") is True  # no age rule
    assert len(queries) == 0
