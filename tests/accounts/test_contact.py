"""The contact form: attachments checked by content (size, count, type, pixel floods, ZIP
bombs) with a clear message each, images re-encoded, staff answer in the admin, retention."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts.contact import services
from accounts.models import ContactAttachment, ContactMessage
from accounts.tasks import contact_messages_purge
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 0.0)}  # GPS info
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def pixel_flood_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims billions of pixels (decoding it would eat the RAM)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.txt", b"\x00" * (80 * 1024 * 1024))
    return buf.getvalue()


def send(*files: SimpleUploadedFile, client: Client | None = None, email: str = "me@example.com"):  # type: ignore[no-untyped-def]
    return (client or Client()).post(
        "/contact/",
        {
            "name": "Ann",
            "email": email,
            "topic": "general",
            "message": "The button does nothing.",
            "attachments": list(files),
        },
    )


def stored_contact_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "contact"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (
            lambda: SimpleUploadedFile("huge.pdf", b"%PDF-1.7\n" + b"0" * (5 * 1024 * 1024)),
            "huge.pdf is too large: at most 5 MB a file.",
        ),
        (
            lambda: SimpleUploadedFile("shell.png", b"<?php system($_GET['c']); ?>", "image/png"),
            "shell.png is not a PNG file: its content is text/plain.",
        ),
        (
            lambda: SimpleUploadedFile("flood.png", pixel_flood_png(), "image/png"),
            "flood.png has too many pixels: at most 40 million.",
        ),
        (
            # Under Pillow's own bomb limit: our lower limit refuses it before decoding.
            lambda: SimpleUploadedFile("wide.png", pixel_flood_png(8000, 8000), "image/png"),
            "wide.png has too many pixels: at most 40 million.",
        ),
        (
            lambda: SimpleUploadedFile("logs.zip", zip_bomb(), "application/zip"),
            "logs.zip unpacks to too much (a ZIP bomb?)",
        ),
        (
            lambda: SimpleUploadedFile("setup.exe", b"MZ\x90\x00" + bytes(range(256)) * 4),
            "setup.exe: this kind of file cannot be attached.",
        ),
    ],
    ids=["oversize", "php-named-png", "pixel-flood", "pixel-flood-small", "zip-bomb", "exe"],
)
def test_a_bad_attachment_is_refused_with_a_clear_message_and_nothing_is_kept(upload, message):
    before = stored_contact_files()
    response = send(SimpleUploadedFile("fine.txt", b"hello"), upload())
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ContactMessage.objects.exists()
    assert stored_contact_files() == before


def test_too_many_attachments_are_refused(settings):
    settings.CONTACT_MAX_ATTACHMENTS = 2
    files = [SimpleUploadedFile(f"n{i}.txt", b"x") for i in range(3)]
    response = send(*files)
    assert response.status_code == 400 and "Attach at most 2 files." in response.content.decode()
    assert not ContactMessage.objects.exists()


def test_a_good_message_is_kept_with_images_re_encoded_without_metadata():
    original = jpeg_with_gps()
    assert b"SpyCam" in original
    response = send(
        SimpleUploadedFile("screen.JPG", original, "image/jpeg"),
        SimpleUploadedFile("notes.txt", "привет".encode(), "text/plain"),
    )
    assert response.status_code == 200 and b"contact-sent" in response.content
    contact = ContactMessage.objects.get()
    assert (contact.name, contact.email, contact.status) == ("Ann", "me@example.com", "new")
    image, text = contact.attachments.order_by("pk")
    assert (image.original_name, image.content_type) == ("screen.JPG", "image/jpeg")
    stored = Path(image.file.path).read_bytes()
    assert stored != original and b"SpyCam" not in stored
    with Image.open(io.BytesIO(stored)) as reread:
        assert reread.size == (40, 30) and not reread.getexif()
    assert image.file.name.endswith(".jpg") and "screen" not in image.file.name
    assert Path(text.file.path).read_bytes() == "привет".encode()


def test_attachments_are_for_staff_eyes_only():
    send(SimpleUploadedFile("notes.txt", b"secret"))
    url = f"/media/{ContactAttachment.objects.get().file.name}"
    user, staff = Client(), Client()
    user.force_login(UserFactory())
    staff.force_login(UserFactory(is_staff=True))
    assert user.get(url).status_code == 404
    assert staff.get(url).status_code == 200


def test_staff_read_and_answer_in_the_admin(django_capture_on_commit_callbacks):
    send(SimpleUploadedFile("notes.txt", b"log line"), email="asker@example.com")
    contact = ContactMessage.objects.get()
    staff_user = UserFactory(is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(staff_user)
    page = staff.get(f"/admin/accounts/contactmessage/{contact.pk}/change/").content.decode()
    assert "The button does nothing." in page and "notes.txt" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            f"/admin/accounts/contactmessage/{contact.pk}/change/",
            {
                "status": "new",
                "answer": "Fixed, thanks!",
                "attachments-TOTAL_FORMS": "1",
                "attachments-INITIAL_FORMS": "1",
                "attachments-0-id": contact.attachments.get().pk,
                "attachments-0-message": contact.pk,
            },
        )
    assert response.status_code == 302, response.content[:2000]
    contact.refresh_from_db()
    assert (contact.status, contact.answered_by) == ("answered", staff_user)
    (answer,) = mail.outbox
    assert answer.to == ["asker@example.com"] and "Fixed, thanks!" in answer.body


def test_messages_are_purged_after_the_retention_period(
    settings, django_capture_on_commit_callbacks
):
    settings.CONTACT_RETENTION_DAYS = 365
    before = set(stored_contact_files())
    send(SimpleUploadedFile("notes.txt", b"old"))
    old = ContactMessage.objects.get()
    send(SimpleUploadedFile("notes.txt", b"new"), email="other@example.com")
    files = set(stored_contact_files()) - before
    assert len(files) == 2
    ContactMessage.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - dt.timedelta(days=366)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert contact_messages_purge.delay().get() == 1
    assert list(ContactMessage.objects.values_list("email", flat=True)) == ["other@example.com"]
    assert [f.read_bytes() for f in files if f.exists()] == [b"new"]
    # An answer restarts the clock: a message answered recently stays.
    assert services.contact_messages_purge(now=timezone.now() + dt.timedelta(days=300)) == 0


def test_one_address_cannot_flood_the_form(settings):
    settings.CONTACT_MESSAGES_PER_HOUR = 2
    assert send().status_code == 200
    assert send().status_code == 200
    response = send()
    assert response.status_code == 400
    assert "Please wait before writing again." in response.content.decode()
    assert ContactMessage.objects.count() == 2
