"""Social login through the real allauth views, with the providers answered at the HTTP
transport (see conftest.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import SESSION_KEY
from django.test import Client

from accounts.models import Gender, User
from tests.factories import UserFactory

from .conftest import social_login

pytestmark = pytest.mark.django_db

VK_USER = {
    "user_id": "1234567890",
    "first_name": "Ivan",
    "last_name": "Petrov",
    "avatar": "https://sun1-1.userapi.com/photo.jpg",
    "email": "ivan@example.com",
    "sex": 2,
    "verified": False,
    "birthday": "17.03.1995",
}
FB_ME = {
    "id": "10158000000000001",
    "email": "ivan@example.com",
    "name": "Ivan Petrov",
    "first_name": "Ivan",
    "last_name": "Petrov",
    "gender": "male",
    "birthday": "03/17/1995",
    "location": {"id": "106078429431815", "location": {"country_code": "RU", "city": "Moscow"}},
}
X_USER = {
    "id": "2244994945",
    "name": "X Dev",
    "username": "XDevelopers",
    "verified": False,
    "profile_image_url": "https://pbs.twimg.com/profile_images/0/x_normal.jpg",
    "created_at": "2013-12-14T04:35:55.000Z",
}


def logged_in_id(client: Client) -> int | None:
    value = client.session.get(SESSION_KEY)
    return int(value) if value else None


def test_vk_login_creates_account_with_profile_from_vk(providers, client):
    providers.vk(**VK_USER)

    response = social_login(client, "vk", device_id="vk-device-1")

    assert response.status_code == 302
    assert response["Location"] == "/"  # VK gave a birth date: nothing more to ask
    user = User.objects.get(email="ivan@example.com")
    assert logged_in_id(client) == user.pk
    account = SocialAccount.objects.get(provider="vk")
    assert (account.user, account.uid) == (user, "1234567890")
    assert user.profile.gender == Gender.MALE
    assert user.profile.birth_date == dt.date(1995, 3, 17)
    # The token request carried the authorisation code and VK's device id.
    token_call = next(
        c for c in providers.calls if c.url.startswith("https://id.vk.ru/oauth2/auth")
    )
    body = str(token_call.body)
    assert "code=the-code" in body and "device_id=vk-device-1" in body


def test_vk_login_again_logs_into_the_same_account(providers, client):
    providers.vk(**VK_USER)
    social_login(client, "vk")
    client.logout()

    social_login(client, "vk")

    assert User.objects.count() == 1
    assert logged_in_id(client) == User.objects.get().pk


def test_trusted_facebook_login_joins_the_account_with_that_email(providers, client, settings):
    settings.SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS = ["facebook", "vk"]
    providers.vk(**{**VK_USER, "birthday": "", "sex": 0})
    social_login(client, "vk")
    vk_user = User.objects.get()
    vk_user.profile.gender = Gender.OTHER  # chosen by the user: Facebook must not overwrite
    vk_user.profile.save()
    client.logout()

    providers.facebook(**FB_ME)
    response = social_login(client, "facebook")

    assert response.status_code == 302
    assert User.objects.count() == 1
    assert logged_in_id(client) == vk_user.pk
    assert SocialAccount.objects.get(provider="facebook").user == vk_user
    vk_user.profile.refresh_from_db()
    assert vk_user.profile.gender == Gender.OTHER  # kept
    assert vk_user.profile.birth_date == dt.date(1995, 3, 17)  # filled: was empty
    assert vk_user.profile.country == "RU"


def test_untrusted_facebook_login_does_not_join_by_email(providers, client, settings):
    settings.SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS = ["vk"]
    owner = UserFactory(email="ivan@example.com")
    providers.facebook(**FB_ME)

    response = social_login(client, "facebook")

    # allauth's sign-up form opens instead: nobody is logged in, nothing is connected.
    assert response.status_code == 302
    assert response["Location"] == "/accounts/3rdparty/signup/"
    assert logged_in_id(client) is None
    assert not SocialAccount.objects.filter(user=owner).exists()
    page = client.get("/accounts/3rdparty/signup/")
    assert page.status_code == 200
    assert b"birth_date" in page.content
    assert b"signing up with your Facebook account" in page.content

    # Insisting on the taken email is refused ...
    taken = client.post(
        "/accounts/3rdparty/signup/", {"email": "ivan@example.com", "birth_date": "1995-03-17"}
    )
    assert taken.status_code == 200
    assert b"already" in taken.content
    assert User.objects.count() == 1

    # ... another (or no) email makes a separate account, with the birth date asked.
    done = client.post("/accounts/3rdparty/signup/", {"email": "", "birth_date": "1994-01-02"})
    assert done.status_code == 302
    new_user = SocialAccount.objects.get(provider="facebook").user
    assert new_user != owner and new_user.email is None
    assert not EmailAddress.objects.filter(user=new_user).exists()
    assert logged_in_id(client) == new_user.pk
    assert new_user.profile.birth_date == dt.date(1994, 1, 2)


def test_x_login_works_without_email_and_then_asks_the_birth_date(providers, client):
    providers.x(**X_USER)

    response = social_login(client, "twitter_oauth2")

    assert response.status_code == 302
    assert response["Location"].startswith("/profile/birth-date/")
    user = User.objects.get()
    assert user.email is None
    assert logged_in_id(client) == user.pk
    assert SocialAccount.objects.get(provider="twitter_oauth2").uid == "2244994945"

    form = client.get(response["Location"])
    assert form.status_code == 200
    saved = client.post(response["Location"], {"birth_date": "2000-02-29", "next": "/"})
    assert saved.status_code == 302 and saved["Location"] == "/"
    user.profile.refresh_from_db()
    assert user.profile.birth_date == dt.date(2000, 2, 29)


def test_two_x_accounts_without_email_are_two_users(providers, client):
    providers.x(**X_USER)
    social_login(client, "twitter_oauth2")
    client.logout()
    providers.x(**{**X_USER, "id": "99", "username": "other"})

    social_login(client, "twitter_oauth2")

    assert User.objects.filter(email__isnull=True).count() == 2


def test_logged_in_user_connects_and_disconnects_a_provider(providers, client):
    user = UserFactory(email="someone@example.com")
    user.profile.country = ""
    user.profile.save()
    client.force_login(user)
    # VK's email belongs to nobody here, but connecting never goes by email anyway.
    providers.vk(**{**VK_USER, "country": {"id": 1, "title": "Russia"}})

    response = social_login(client, "vk", process="connect")

    assert response.status_code == 302
    account = SocialAccount.objects.get(provider="vk")
    assert account.user == user
    user.profile.refresh_from_db()
    assert user.profile.country == "RU"  # was empty
    assert user.profile.birth_date == dt.date(1990, 5, 17)  # the user's own, kept

    page = client.get("/accounts/3rdparty/")
    assert page.status_code == 200 and b"disconnect-vk" in page.content
    client.post("/accounts/3rdparty/", {"account": account.pk})
    assert not SocialAccount.objects.filter(pk=account.pk).exists()


def test_connecting_never_moves_the_login_to_the_email_owner(providers, client, settings):
    settings.SOCIALACCOUNT_TRUSTED_EMAIL_PROVIDERS = ["vk"]
    UserFactory(email="ivan@example.com")
    me = UserFactory(email="me@example.com")
    client.force_login(me)
    providers.vk(**VK_USER)

    social_login(client, "vk", process="connect")

    assert SocialAccount.objects.get(provider="vk").user == me
    assert logged_in_id(client) == me.pk


def test_deleted_account_cannot_log_in_with_its_provider(providers, client):
    from accounts.services import account_delete_request

    providers.vk(**VK_USER)
    social_login(client, "vk")
    user = User.objects.get()
    client.logout()
    account_delete_request(user=user)

    response = social_login(client, "vk")

    assert logged_in_id(client) is None
    assert response.status_code == 302 and response["Location"] == "/accounts/inactive/"
    assert b"This account is closed" in client.get("/accounts/inactive/").content


def test_providers_without_credentials_are_not_offered(client):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'data-provider="vk"' not in page.content


def test_configured_providers_are_offered_on_login_page(providers, client):
    page = client.get("/accounts/login/")
    for provider in ("facebook", "vk", "twitter_oauth2"):
        assert f'data-provider="{provider}"'.encode() in page.content
