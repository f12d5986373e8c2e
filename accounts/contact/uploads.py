"""Checks on contact form attachments. The type is judged from the bytes, never from the name
or the browser's say-so, and the name must agree with it; images are decoded and encoded
again (dropping metadata such as GPS positions, and anything hidden after the pixels) with
a guard against pixel floods; archives are opened to refuse ZIP bombs."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError

# What may be attached, by kind: the file name extensions that may carry it.
EXTENSIONS = {
    "image/png": {".png"},
    "image/jpeg": {".jpg", ".jpeg"},
    "image/gif": {".gif"},
    "image/webp": {".webp"},
    "application/pdf": {".pdf"},
    "application/zip": {".zip"},
    "text/plain": {".txt", ".log", ".csv"},
}
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
ZIP_READ_CHUNK = 64 * 1024


@dataclass
class CheckedFile:
    name: str  # the sender's name, for staff
    content_type: str
    data: bytes  # what is stored (re-encoded for images)
    extension: str


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def sniff(head: bytes) -> str | None:
    """The kind of file these first bytes begin, if it is one we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    return None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_attachments(files: list[UploadedFile]) -> list[CheckedFile]:
    """Every attachment checked, or a ValidationError naming the file and what is wrong."""
    if len(files) > settings.CONTACT_MAX_ATTACHMENTS:
        raise ValidationError(
            f"Attach at most {settings.CONTACT_MAX_ATTACHMENTS} files.", code="too_many"
        )
    total = sum(f.size or 0 for f in files)
    if total > settings.CONTACT_MAX_TOTAL_BYTES:
        raise ValidationError(
            f"The attachments come to more than {_mb(settings.CONTACT_MAX_TOTAL_BYTES)} together.",
            code="too_large",
        )
    return [check_attachment(f) for f in files]


def check_attachment(upload: UploadedFile) -> CheckedFile:
    name = os.path.basename(upload.name or "file")[:200]
    limit = settings.CONTACT_MAX_ATTACHMENT_BYTES
    if (upload.size or 0) > limit:
        raise ValidationError(
            f"{name} is too large: at most {_mb(limit)} a file.", code="too_large"
        )
    upload.seek(0)
    data = upload.read(limit + 1)
    if len(data) > limit:  # the size the client declared was not the truth
        raise ValidationError(
            f"{name} is too large: at most {_mb(limit)} a file.", code="too_large"
        )
    kind = sniff(data[:16]) or ("text/plain" if _is_text(data) else None)
    extension = os.path.splitext(name)[1].lower()
    if kind is None:
        raise ValidationError(
            f"{name}: this kind of file cannot be attached. Attach images (PNG, JPEG, GIF, "
            "WebP), PDF, plain text or ZIP.",
            code="type",
        )
    if extension not in EXTENSIONS[kind]:
        claimed = next((k for k, exts in EXTENSIONS.items() if extension in exts), None)
        what = (
            f"is not a {extension[1:].upper()} file"
            if claimed
            else "has a name that does not fit its content"
        )
        raise ValidationError(
            f"{name} {what}: its content is {kind}. Rename it or attach another file.",
            code="type_mismatch",
        )
    if kind in IMAGE_FORMATS:
        data, extension = _reencode(name, data, kind)
    elif kind == "application/zip":
        _check_zip(name, data)
    return CheckedFile(name=name, content_type=kind, data=data, extension=extension)


def _reencode(name: str, data: bytes, kind: str) -> tuple[bytes, str]:
    max_pixels = settings.CONTACT_MAX_IMAGE_PIXELS
    flood = ValidationError(
        f"{name} has too many pixels: at most {max_pixels // 1_000_000} million.",
        code="pixel_flood",
    )
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Image.open reads the header only: refuse a pixel flood before decoding it.
            width, height = image.size
            if width * height > max_pixels:
                raise flood
            if image.format != IMAGE_FORMATS[kind]:
                raise ValidationError(f"{name} is not a valid image.", code="type")
            image.seek(0)  # the first frame of an animation
            image.load()
            upright = ImageOps.exif_transpose(image)
            keep_jpeg = kind == "image/jpeg"
            clean = upright.convert("RGB" if keep_jpeg else "RGBA")
    except ValidationError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard, far above ours
        raise flood from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise ValidationError(f"{name} is not a valid image.", code="type") from exc
    out = io.BytesIO()
    # Encoded again from the pixels alone: no EXIF (GPS), no comments, nothing appended.
    if keep_jpeg:
        clean.save(out, "JPEG", quality=90)
        return out.getvalue(), ".jpg"
    clean.save(out, "PNG", optimize=True)
    return out.getvalue(), ".png"


def _check_zip(name: str, data: bytes) -> None:
    """Refuse archives that would unpack to far more than they weigh, or to too much, or to
    too many files, or that hide their content (encryption, archives inside). The sizes in
    the directory are the sender's claim, so every member is also inflated and counted."""
    bomb = ValidationError(
        f"{name} unpacks to too much (a ZIP bomb?): at most "
        f"{_mb(settings.CONTACT_ZIP_MAX_UNPACKED_BYTES)} in {settings.CONTACT_ZIP_MAX_MEMBERS} "
        "files, each at most 100 times its packed size.",
        code="zip_bomb",
    )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > settings.CONTACT_ZIP_MAX_MEMBERS:
                raise bomb
            unpacked = 0
            for member in members:
                if member.flag_bits & 0x1:
                    raise ValidationError(
                        f"{name} is encrypted: attach it without a password.", code="zip_encrypted"
                    )
                if member.filename.lower().endswith(
                    (".zip", ".gz", ".7z", ".rar", ".tar", ".bz2", ".xz")
                ):
                    raise ValidationError(
                        f"{name} holds another archive ({member.filename}): attach its files.",
                        code="zip_nested",
                    )
                if member.file_size > 100 * max(member.compress_size, 1024):
                    raise bomb
                with archive.open(member) as stream:
                    while chunk := stream.read(ZIP_READ_CHUNK):
                        unpacked += len(chunk)
                        if unpacked > settings.CONTACT_ZIP_MAX_UNPACKED_BYTES:
                            raise bomb
    except ValidationError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise ValidationError(f"{name} is not a valid ZIP archive.", code="type") from exc
