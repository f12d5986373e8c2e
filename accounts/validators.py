"""Checks on untrusted uploads, shared by the forms (to show the error by the field) and the
services (so that no other caller can skip them)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files import File
from PIL import Image, UnidentifiedImageError

PHOTO_MAX_BYTES = 2 * 1024 * 1024
PHOTO_MAX_SIDE = 4096
PHOTO_FORMATS = {"JPEG", "PNG", "WEBP"}


def validate_photo(photo: File) -> None:  # type: ignore[type-arg]
    """Refuse a profile photo that is too big or not a JPEG, PNG or WebP image, judged by
    its bytes (the file name and the browser's content type are the sender's say-so)."""
    if photo.size is not None and photo.size > PHOTO_MAX_BYTES:
        raise ValidationError(
            f"The photo is too large: at most {PHOTO_MAX_BYTES // (1024 * 1024)} MB.",
            code="photo_too_large",
        )
    position = photo.tell() if hasattr(photo, "tell") else 0
    try:
        photo.seek(0)
        with Image.open(photo) as image:
            kind, (width, height) = image.format, image.size
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise ValidationError("Upload a JPEG, PNG or WebP image.", code="photo_type") from exc
    finally:
        photo.seek(position)
    if kind not in PHOTO_FORMATS:
        raise ValidationError("Upload a JPEG, PNG or WebP image.", code="photo_type")
    if max(width, height) > PHOTO_MAX_SIDE:
        raise ValidationError(
            f"The photo is too large: at most {PHOTO_MAX_SIDE} pixels a side.",
            code="photo_too_large",
        )
