"""Every write of the contact form: messages, staff answers, retention."""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from realtime.errors import ServiceError
from realtime.ratelimit import allow

from ..keys import contact_rate_key
from ..models import User
from .models import ContactAttachment, ContactMessage, ContactTopic
from .uploads import check_attachments

log = logging.getLogger(__name__)


def contact_message_create(
    *,
    user: User | None,
    name: str,
    email: str,
    topic: str,
    message: str,
    files: list[UploadedFile],
    client_ip: str | None = None,
) -> ContactMessage:
    """Store a message and its attachments, all checked first: a refused attachment stores
    nothing. Limited to CONTACT_MESSAGES_PER_HOUR per address and per network address."""
    if topic not in ContactTopic.values:
        raise ServiceError("invalid", "Choose a topic.")
    checked = check_attachments(files)  # ValidationError names the file and the reason
    per_second = settings.CONTACT_MESSAGES_PER_HOUR / 3600
    for who in (f"email:{email.strip().lower()}", f"ip:{client_ip or '-'}"):
        if not allow(
            contact_rate_key(who),
            capacity=settings.CONTACT_MESSAGES_PER_HOUR,
            per_second=per_second,
        ):
            raise ServiceError(
                "rate_limited",
                "You have sent several messages in the last hour; we will answer them. "
                "Please wait before writing again.",
                status=429,
            )
    saved: list[FieldFile] = []
    try:
        with transaction.atomic():
            contact = ContactMessage.objects.create(
                user=user if user is not None and user.is_authenticated else None,
                name=name.strip()[:100],
                email=email.strip(),
                topic=topic,
                message=message.strip()[:5000],
            )
            for f in checked:
                attachment = ContactAttachment(
                    message=contact,
                    original_name=f.name,
                    content_type=f.content_type,
                    size=len(f.data),
                )
                attachment.file.save(
                    f"{secrets.token_hex(12)}{f.extension}", ContentFile(f.data), save=False
                )
                saved.append(attachment.file)
                attachment.save()
    except Exception:
        _files_delete(saved)  # the rows rolled back: their files go too
        raise
    return contact


@transaction.atomic
def contact_message_answer(*, message_id: int, answer: str, by: User) -> ContactMessage:
    """Staff answer: mailed to the sender, kept with the message."""
    answer = answer.strip()
    if not answer:
        raise ValidationError("Write an answer.")
    contact = ContactMessage.objects.select_for_update().get(pk=message_id)
    contact.answer = answer
    contact.answered_at = timezone.now()
    contact.answered_by = by
    contact.status = ContactMessage.Status.ANSWERED
    contact.save(update_fields=["answer", "answered_at", "answered_by", "status"])
    body = (
        f"Hello {contact.name},\n\n{answer}\n\n"
        f"--- Your message of {contact.created_at:%Y-%m-%d}:\n{contact.message}\n"
    )
    transaction.on_commit(
        lambda: send_mail(
            subject=f"Re: {contact.get_topic_display()}",  # type: ignore[attr-defined]
            message=body,
            from_email=None,
            recipient_list=[contact.email],
        )
    )
    return contact


def contact_messages_purge(*, now: dt.datetime | None = None, batch_size: int = 200) -> int:
    """Beat: messages whose last activity (sent, answered) is older than
    CONTACT_RETENTION_DAYS go, with their attachments' files."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.CONTACT_RETENTION_DAYS)
    old = Q(created_at__lt=cutoff) & (Q(answered_at__isnull=True) | Q(answered_at__lt=cutoff))
    purged = 0
    while True:
        with transaction.atomic():
            ids = list(
                ContactMessage.objects.filter(old)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return purged
            files = contact_messages_delete(ids=ids)
            transaction.on_commit(lambda files=files: _files_delete(files))  # type: ignore[misc]
        purged += len(ids)


def contact_messages_delete(*, ids: list[int]) -> list[FieldFile]:
    """Delete these messages (in the caller's transaction); returns their files to remove."""
    files = [a.file for a in ContactAttachment.objects.filter(message_id__in=ids)]
    ContactMessage.objects.filter(pk__in=ids).delete()
    return files


def _files_delete(files: list[FieldFile]) -> None:
    for f in files:
        if not f.name:
            continue
        try:
            f.storage.delete(f.name)
        except OSError:
            log.warning("could not delete %s", f.name)
