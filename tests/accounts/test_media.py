"""Uploaded files are served through a permission check: photos to signed-in users, report
frames and ban images to staff only; names that climb out of the media folder are refused."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from accounts import services
from accounts.models import Profile
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored():  # type: ignore[no-untyped-def]
    names: list[str] = []

    def store(name: str, data: bytes) -> str:
        saved = default_storage.save(name, ContentFile(data))
        names.append(saved)
        return saved

    yield store
    for name in names:
        default_storage.delete(name)


def get(user, name: str):  # type: ignore[no-untyped-def]
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get(f"/media/{name}")


def profile_photo(name: str) -> str:
    """Make `name` somebody's profile photo (a photo nobody's profile shows is not served)."""
    Profile.objects.filter(user=UserFactory()).update(photo=name)
    return name


def body(response) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(response.streaming_content)


def test_photos_are_for_signed_in_users(stored) -> None:  # type: ignore[no-untyped-def]
    name = profile_photo(stored("profiles/2026/11/a1b2.jpg", b"photo-bytes"))
    assert get(None, name).status_code == 404
    response = get(UserFactory(), name)
    assert response.status_code == 200 and body(response) == b"photo-bytes"
    assert response["Cache-Control"] == "private, max-age=3600"


def test_a_deleted_profiles_photo_is_invisible_at_once(stored) -> None:  # type: ignore[no-untyped-def]
    owner = UserFactory()
    name = stored("profiles/2026/11/e5f6.jpg", b"photo")
    Profile.objects.filter(user=owner).update(photo=name)
    assert get(UserFactory(), name).status_code == 200
    services.account_delete_request(user=owner)
    assert get(UserFactory(), name).status_code == 404
    assert get(UserFactory(is_staff=True), name).status_code == 200  # staff still can


@pytest.mark.parametrize("folder", ["videochat/reports/2026/11/", "videochat/bans/2026/11/"])
def test_evidence_is_for_staff_only(stored, folder: str) -> None:  # type: ignore[no-untyped-def]
    name = stored(folder + "f00d.jpg", b"evidence")
    assert get(None, name).status_code == 404
    assert get(UserFactory(), name).status_code == 404
    response = get(UserFactory(is_staff=True), name)
    assert response.status_code == 200 and body(response) == b"evidence"


def test_unlisted_folders_missing_files_and_traversal_are_refused(stored) -> None:  # type: ignore[no-untyped-def]
    other = stored("elsewhere/x.bin", b"x")
    staff, user = UserFactory(is_staff=True), UserFactory()
    assert get(user, other).status_code == 404
    assert get(staff, "profiles/none.jpg").status_code == 404
    assert get(staff, "profiles/../../config/settings/base.py").status_code == 404
    assert get(staff, "profiles/%2e%2e/%2e%2e/manage.py").status_code == 404


def test_behind_nginx_the_bytes_come_from_its_internal_location(stored, settings) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_X_ACCEL_REDIRECT = "/protected-media/"
    name = profile_photo(stored("profiles/2026/11/c3d4.jpg", b"photo"))
    response = get(UserFactory(), name)
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{name}"
    assert response.content == b""
    assert get(None, name).status_code == 404


# A signed-in user must not climb from the photo folder into the evidence folders, whatever
# encoding hides the `..` (each one the review tried, and their mixes).
CLIMBS = [
    "profiles/../videochat/reports/{f}",
    "profiles/%2e%2e/videochat/reports/{f}",
    "profiles/%2E%2E/videochat/reports/{f}",
    "profiles/..%2fvideochat/reports/{f}",
    "profiles/..%2Fvideochat/reports/{f}",
    "profiles/.%2e/videochat/reports/{f}",
    "profiles/%252e%252e/videochat/reports/{f}",
    "profiles/./../videochat/reports/{f}",
    "profiles//../videochat/reports/{f}",
    "profiles\\..\\videochat/reports/{f}",
]


@pytest.mark.parametrize("x_accel", ["", "/protected-media/"])
@pytest.mark.parametrize("climb", CLIMBS)
def test_traversal_from_photos_into_evidence_is_refused(stored, settings, climb, x_accel) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_X_ACCEL_REDIRECT = x_accel
    evidence = stored("videochat/reports/2026/11/frame.jpg", b"evidence")
    f = evidence.removeprefix("videochat/reports/")
    user = UserFactory()
    response = get(user, climb.format(f=f))
    assert response.status_code == 404
    assert "X-Accel-Redirect" not in response
    # Staff are refused the crafted name too: only the plain name is served.
    assert get(UserFactory(is_staff=True), climb.format(f=f)).status_code == 404
    assert get(UserFactory(is_staff=True), evidence).status_code == 200
