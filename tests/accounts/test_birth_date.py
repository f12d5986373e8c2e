"""The birth date gates Video chat (18+) and CallsApp (10+): it is fixed once given, a
correction is a request staff decide in the admin (the request being the audit record), and
EEA users under 16 keep protective privacy defaults."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from accounts import services
from accounts.models import BirthDateChange
from accounts.selectors import meets_age_rule
from realtime.errors import ServiceError
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CHILD = dt.date(2011, 4, 2)
ADULT = dt.date(1990, 4, 2)


def child():  # type: ignore[no-untyped-def]
    user = UserFactory()
    user.profile.birth_date = CHILD
    user.profile.save()
    return user


def signed_in(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def profile_post(user, **changes):  # type: ignore[no-untyped-def]
    data = {"nickname": "kid", "description": "", "gender": "", "country": "", "language": "en"}
    data.update(changes)
    return signed_in(user).post("/profile/", data)


def test_the_profile_page_cannot_change_the_birth_date() -> None:
    user = child()
    response = profile_post(user, birth_date="1990-01-01")
    assert response.status_code == 302  # saved the rest...
    user.profile.refresh_from_db()
    assert user.profile.birth_date == CHILD  # ...but not the birth date
    assert user.profile.nickname == "kid"
    assert not meets_age_rule(user, "videochat")
    page = signed_in(user).get("/profile/").content.decode()
    assert 'name="birth_date"' not in page
    assert "Ask for a correction" in page


def test_services_refuse_a_second_birth_date() -> None:
    user = child()
    with pytest.raises(ServiceError) as e:
        services.profile_update(user=user, data={"birth_date": ADULT})
    assert e.value.code == "invalid"
    with pytest.raises(ServiceError) as e:
        services.profile_birth_date_set(user=user, birth_date=ADULT)
    assert e.value.code == "birth_date_fixed"
    user.profile.refresh_from_db()
    assert user.profile.birth_date == CHILD


def test_the_ask_once_page_does_not_overwrite_a_given_birth_date() -> None:
    user = child()
    client = signed_in(user)
    response = client.post("/profile/birth-date/", {"birth_date": "1990-01-01", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/profile/birth-date/change/"
    user.profile.refresh_from_db()
    assert user.profile.birth_date == CHILD


def test_a_correction_waits_for_staff_and_approval_is_audited() -> None:
    user = child()
    client = signed_in(user)
    response = client.post(
        "/profile/birth-date/change/", {"requested": "1990-04-02", "reason": "Typo at sign-up"}
    )
    assert response.status_code == 302
    change = BirthDateChange.objects.get(user=user)
    assert (change.status, change.current, change.requested) == ("pending", CHILD, ADULT)
    user.profile.refresh_from_db()
    assert user.profile.birth_date == CHILD and not meets_age_rule(user, "videochat")
    # A second request while one waits is refused.
    again = client.post("/profile/birth-date/change/", {"requested": "1989-01-01", "reason": "x"})
    assert BirthDateChange.objects.filter(user=user).count() == 1
    assert b"waiting for review" in again.content

    # Staff see it in the admin, as a sentence, and approve it with the admin action.
    staff = UserFactory(is_staff=True, is_superuser=True)
    admin = signed_in(staff)
    listing = admin.get("/admin/accounts/birthdatechange/").content.decode()
    assert "asks to change their birth date from 2011-04-02 to 1990-04-02" in listing
    done = admin.post(
        "/admin/accounts/birthdatechange/",
        {"action": "approve", "_selected_action": [change.pk]},
    )
    assert done.status_code == 302
    change.refresh_from_db()
    user.profile.refresh_from_db()
    assert change.status == "approved" and change.decided_by == staff and change.decided_at
    assert user.profile.birth_date == ADULT and meets_age_rule(user, "videochat")


def test_refusal_keeps_the_birth_date_and_decisions_are_final() -> None:
    user = child()
    change = services.birth_date_change_request(user=user, requested=ADULT, reason="trust me")
    staff = UserFactory(is_staff=True)
    with pytest.raises(ServiceError):
        services.birth_date_change_decide(change_id=change.pk, staff=user, approve=True)
    services.birth_date_change_decide(
        change_id=change.pk, staff=staff, approve=False, note="No proof"
    )
    user.profile.refresh_from_db()
    assert user.profile.birth_date == CHILD
    with pytest.raises(ServiceError) as e:
        services.birth_date_change_decide(change_id=change.pk, staff=staff, approve=True)
    assert e.value.code == "decided"
    page = signed_in(user).get("/profile/birth-date/change/").content.decode()
    assert "refused" in page and "No proof" in page


@pytest.mark.parametrize(
    ("requested", "reason", "code"),
    [(CHILD, "same", "unchanged"), (ADULT, "  ", "reason_required")],
)
def test_bad_change_requests_are_refused(requested, reason, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceError) as e:
        services.birth_date_change_request(user=child(), requested=requested, reason=reason)
    assert e.value.code == code


def test_eea_under_16_keep_privacy_defaults_until_a_guardian_allows() -> None:
    user = child()  # 15 in 2026
    profile = services.profile_update(user=user, data={"country": "DE"})
    assert (profile.show_online_status, profile.send_read_receipts) == (False, False)
    # A crafted post cannot switch them on; the page says why.
    profile_post(user, country="DE", show_online_status="on", send_read_receipts="on")
    user.profile.refresh_from_db()
    assert (user.profile.show_online_status, user.profile.send_read_receipts) == (False, False)
    assert b'data-testid="privacy-locked"' in signed_in(user).get("/profile/").content
    # Staff record a guardian's written instruction: now the user may choose.
    user.profile.guardian_allows_privacy_changes = True
    user.profile.save()
    profile_post(user, country="DE", show_online_status="on")
    user.profile.refresh_from_db()
    assert user.profile.show_online_status is True


def test_outside_the_eea_and_from_16_the_user_chooses() -> None:
    user = child()
    profile = services.profile_update(user=user, data={"country": "US", "show_online_status": True})
    assert profile.show_online_status is True
    adult = UserFactory()
    adult.profile.birth_date = ADULT
    adult.profile.save()
    assert services.profile_update(user=adult, data={"country": "FR"}).show_online_status


def test_a_child_signing_up_in_the_eea_starts_with_the_protective_defaults() -> None:
    user = UserFactory()
    user.profile.birth_date, user.profile.country = None, "NO"
    user.profile.save()
    profile = services.profile_birth_date_set(user=user, birth_date=dt.date(2014, 1, 1))
    assert (profile.show_online_status, profile.send_read_receipts) == (False, False)
