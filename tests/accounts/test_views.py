from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from accounts.models import Profile, User
from accounts.validators import PHOTO_MAX_BYTES
from tests.factories import DeviceFactory, UserFactory

pytestmark = pytest.mark.django_db


def image(fmt: str = "PNG", size: tuple[int, int] = (80, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (63, 182, 255)).save(buf, fmt)
    return buf.getvalue()


def profile_post(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "nickname": "Nova",
        "description": "Hi there",
        "gender": "f",
        "birth_date": "1992-04-03",
        "country": "PT",
        "language": "ru",
        "translation_target": "en",
        "show_online_status": "",  # unchecked
        "send_read_receipts": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v != ""}


@pytest.fixture
def user_client() -> tuple[User, Client]:
    user = UserFactory()
    client = Client()
    client.force_login(user)
    return user, client


# --- pages render


@pytest.mark.parametrize(
    "path",
    ["/", "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"],
)
def test_public_pages_render_in_the_site_layout(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert b'class="topbar"' in page.content


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/profile/",
        "/devices/",
        "/profile/delete/",
        "/profile/birth-date/change/",  # /profile/birth-date/ asks only those without one
        "/accounts/3rdparty/",
        "/accounts/email/",
        "/accounts/password/change/",
    ],
)
def test_account_pages_render_for_a_user(user_client, path):
    _, client = user_client
    page = client.get(path)
    assert page.status_code == 200
    assert b'data-testid="nav-profile"' in page.content


def test_private_pages_need_login(client):
    for path in ("/profile/", "/devices/", "/profile/delete/", "/accounts/3rdparty/"):
        assert client.get(path)["Location"].startswith("/accounts/login/")


def test_home_shows_products_and_age_gates(user_client):
    user, client = user_client
    user.profile.birth_date = dt.date(dt.date.today().year - 15, 1, 1)
    user.profile.save()
    page = client.get("/").content.decode()
    assert "CBLINE" in page and "Video Chat Alternative" in page and "CallsApp" in page
    assert "You need to be 18 or older." in page


# --- sign-up asks the birth date


def test_email_signup_requires_and_stores_the_birth_date(client):
    form = {
        "email": "new@example.com",
        "password1": "a-Long-pass-77",
        "password2": "a-Long-pass-77",
    }
    missing = client.post("/accounts/signup/", form)
    assert missing.status_code == 200 and not User.objects.filter(email="new@example.com").exists()
    too_young_for_sense = client.post("/accounts/signup/", {**form, "birth_date": "2999-01-01"})
    assert too_young_for_sense.status_code == 200

    done = client.post("/accounts/signup/", {**form, "birth_date": "2001-09-09"})

    assert done.status_code == 302 and done["Location"] == "/"
    user = User.objects.get(email="new@example.com")
    assert user.profile.birth_date == dt.date(2001, 9, 9)
    assert len(mail.outbox) == 1  # the optional email confirmation


def test_login_without_birth_date_is_asked_for_it():
    user = UserFactory(email="nobirth@example.com")
    Profile.objects.filter(user=user).update(birth_date=None)
    client = Client()
    response = client.post(
        "/accounts/login/", {"login": "nobirth@example.com", "password": "correct-horse-battery"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/profile/birth-date/")
    assert b"birth-date-missing" in client.get("/").content


def test_login_with_next_still_asks_the_birth_date_then_goes_on():
    user = UserFactory(email="nobirth2@example.com")
    Profile.objects.filter(user=user).update(birth_date=None)
    client = Client()
    response = client.post(
        "/accounts/login/?next=/devices/",
        {"login": "nobirth2@example.com", "password": "correct-horse-battery"},
    )
    assert response["Location"] == "/profile/birth-date/?next=%2Fdevices%2F"
    saved = client.post("/profile/birth-date/", {"birth_date": "1980-12-24", "next": "/devices/"})
    assert saved["Location"] == "/devices/"
    assert Profile.objects.get(user=user).birth_date == dt.date(1980, 12, 24)


def test_birth_date_page_refuses_foreign_next_urls(user_client):
    user, client = user_client
    Profile.objects.filter(user=user).update(birth_date=None)
    response = client.post(
        "/profile/birth-date/", {"birth_date": "1990-01-01", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


# --- profile edit


def test_profile_edit_saves_everything(user_client):
    user, client = user_client
    photo = SimpleUploadedFile("me.jpg", image("JPEG"), content_type="image/jpeg")

    response = client.post("/profile/", profile_post(photo=photo))

    assert response.status_code == 302
    # The language follows the profile, without a cookie of its own (the cookies promise).
    assert "django_language" not in response.cookies
    assert client.get("/")["Content-Language"] == "ru"
    p = Profile.objects.get(user=user)
    assert (p.nickname, p.description, p.gender, p.country) == ("Nova", "Hi there", "f", "PT")
    assert (p.language, p.translation_target) == ("ru", "en")
    assert p.birth_date == dt.date(1990, 5, 17)  # the factory's: fixed once given
    assert p.show_online_status is False and p.send_read_receipts is True
    assert p.photo.name.startswith("profiles/")
    assert b"Nova" in client.get("/").content  # the header shows the nickname


def test_profile_edit_refuses_an_oversize_photo(user_client):
    user, client = user_client
    big = SimpleUploadedFile("big.png", image() + b"\0" * PHOTO_MAX_BYTES, "image/png")
    response = client.post("/profile/", profile_post(photo=big))
    assert response.status_code == 200
    assert b"too large" in response.content
    assert not Profile.objects.get(user=user).photo


@pytest.mark.parametrize(
    ("name", "content", "content_type"),
    [
        ("evil.jpg", b"<?php echo 1; ?>", "image/jpeg"),  # not an image at all
        ("anim.gif", image("GIF"), "image/gif"),  # an image, but not a type we take
    ],
)
def test_profile_edit_refuses_a_bad_photo(user_client, name, content, content_type):
    user, client = user_client
    bad = SimpleUploadedFile(name, content, content_type)
    response = client.post("/profile/", profile_post(photo=bad))
    assert response.status_code == 200
    assert b"has-error" in response.content
    assert not Profile.objects.get(user=user).photo


def test_profile_edit_refuses_unknown_country_and_missing_birth_date(user_client):
    user, client = user_client
    response = client.post("/profile/", profile_post(country="XX", birth_date=""))
    assert response.status_code == 200
    assert Profile.objects.get(user=user).country == "DE"  # unchanged


# --- account deletion page


def test_account_delete_needs_confirmation_and_password(user_client):
    user, client = user_client
    wrong = client.post("/profile/delete/", {"confirm": "DELETE", "password": "nope"})
    assert wrong.status_code == 200
    unconfirmed = client.post(
        "/profile/delete/", {"confirm": "yes", "password": "correct-horse-battery"}
    )
    assert unconfirmed.status_code == 200
    user.refresh_from_db()
    assert user.is_active


def test_account_delete_logs_out_and_locks_the_account(user_client):
    user, client = user_client
    response = client.post(
        "/profile/delete/", {"confirm": "delete", "password": "correct-horse-battery"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    user.refresh_from_db()
    assert not user.is_active and user.deletion_requested_at is not None
    assert client.get("/profile/").status_code == 302
    login = Client().post(
        "/accounts/login/", {"login": user.email, "password": "correct-horse-battery"}
    )
    assert "_auth_user_id" not in login.client.session


def test_account_without_password_deletes_with_the_typed_word():
    user = UserFactory()
    user.set_unusable_password()
    user.save()
    client = Client()
    client.force_login(user)
    assert client.post("/profile/delete/", {"confirm": "DELETE"}).status_code == 302
    user.refresh_from_db()
    assert not user.is_active


# --- admin


def test_admin_lists_users_profiles_devices():
    admin = User.objects.create_superuser(email="admin@example.com", password="pw")
    DeviceFactory()
    client = Client()
    client.force_login(admin)
    for path in (
        "/admin/accounts/user/",
        "/admin/accounts/user/?deletion=requested",
        f"/admin/accounts/user/{admin.pk}/change/",
        "/admin/accounts/profile/",
        "/admin/accounts/device/",
    ):
        assert client.get(path).status_code == 200, path


def test_admin_deactivates_through_the_service_and_closes_every_socket(
    django_capture_on_commit_callbacks,
):
    from realtime.events import capture_events
    from realtime.keys import user_group

    admin = User.objects.create_superuser(email="admin@example.com", password="pw")
    user = UserFactory()
    client = Client()
    client.force_login(admin)
    with capture_events() as sent, django_capture_on_commit_callbacks(execute=True):
        resp = client.post(
            "/admin/accounts/user/", {"action": "deactivate", "_selected_action": [user.pk]}
        )
    assert resp.status_code == 302
    user.refresh_from_db()
    assert not user.is_active
    assert (user_group(user.pk), {"type": "socket.close", "code": 4403}) in sent
    client.post("/admin/accounts/user/", {"action": "reactivate", "_selected_action": [user.pk]})
    user.refresh_from_db()
    assert user.is_active


def test_admin_reactivate_leaves_an_account_awaiting_deletion_alone():
    """Active with a deletion pending, the purge would later erase a live account: restoring
    it is "Restore profiles", which cancels the deletion too."""
    from accounts.services import account_delete_request

    admin = User.objects.create_superuser(email="admin@example.com", password="pw")
    user = account_delete_request(user=UserFactory())
    client = Client()
    client.force_login(admin)
    client.post("/admin/accounts/user/", {"action": "reactivate", "_selected_action": [user.pk]})
    user.refresh_from_db()
    assert not user.is_active and user.deletion_requested_at is not None


# --- the home page offers only the logins that are configured
def test_home_offers_no_social_login_that_is_not_configured(client):
    page = client.get("/").content.decode()
    promise = page.split('data-testid="login-methods"')[1].split("</div>")[0]
    for name in ("Facebook", "VK", " X"):
        assert name not in promise
    assert "email" in promise.lower()
    login = client.get("/accounts/login/").content.decode()
    assert "Facebook" not in login and "provider-mark" not in login


def test_home_names_each_configured_login(client, providers):  # type: ignore[no-untyped-def]
    page = client.get("/").content.decode()
    promise = page.split('data-testid="login-methods"')[1].split("</div>")[0]
    assert "Facebook" in promise and "VK" in promise and " or X" in promise
