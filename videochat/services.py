"""Every write of videochat/: reports, bans, appeals, the user's chat settings, and the
checks that refuse a user the product."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from accounts.models import Gender, Profile, User
from accounts.services import age_require, profile_ensure
from realtime.errors import NotAllowed, ServiceError
from realtime.events import send_on_commit

from . import events
from .keys import videochat_user_group
from .models import Appeal, AppealStatus, Ban, Report, ReportReason, ReportStatus
from .selectors import active_ban_for, open_appeal, social_uids

log = logging.getLogger(__name__)

FRAME_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
FRAME_MAX_PIXELS = 4096 * 4096
PURGE_BATCH = 200


# --- access
def access_require(*, user: User) -> None:
    """Refuse video chat to a user under the age of majority or under an active ban."""
    age_require(user=user, product="videochat")
    ban = active_ban_for(user)
    if ban is not None:
        raise NotAllowed(f"banned until {ban.expires_at.isoformat()}", code="banned")


# --- reports
def _clean_chat_lines(lines: Any) -> list[dict[str, str]]:
    if not isinstance(lines, list):
        raise ServiceError("invalid", "chat_lines must be a list of {from, text}")
    max_lines = settings.VIDEOCHAT_REPORT_MAX_CHAT_LINES
    max_chars = settings.VIDEOCHAT_REPORT_MAX_LINE_CHARS
    cleaned = []
    # The newest lines are the ones that matter: keep the last N.
    for line in lines[-max_lines:]:
        if not isinstance(line, dict) or line.get("from") not in ("me", "partner"):
            raise ServiceError("invalid", "each chat line is {from: me|partner, text}")
        text = line.get("text")
        if not isinstance(text, str):
            raise ServiceError("invalid", "a chat line's text is a string")
        cleaned.append({"from": line["from"], "text": text[:max_chars]})
    return cleaned


def frame_validate(frame: UploadedFile) -> str:
    """Check an uploaded still is a JPEG, PNG or WebP image of sane size; its extension."""
    if frame.size is None or frame.size > settings.VIDEOCHAT_REPORT_MAX_FRAME_BYTES:
        raise ServiceError("frame_too_large", "the still image is too large")
    try:
        frame.seek(0)
        with Image.open(frame) as img:
            fmt = img.format or ""
            if img.width * img.height > FRAME_MAX_PIXELS:
                raise ServiceError("invalid_frame", "the still image has too many pixels")
            img.verify()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ServiceError("invalid_frame", "the still is not a readable image") from None
    finally:
        frame.seek(0)
    if fmt not in FRAME_FORMATS:
        raise ServiceError("invalid_frame", "the still must be JPEG, PNG or WebP")
    return FRAME_FORMATS[fmt]


@transaction.atomic
def report_create(
    *,
    reporter: User,
    reported_id: int,
    reason: str,
    chat_lines: Any,
    frame: UploadedFile | None,
) -> Report:
    """File a report about a partner the server itself identified (never the client)."""
    if reported_id == reporter.pk:
        raise ServiceError("invalid", "you cannot report yourself")
    if reason not in ReportReason.values:
        raise ServiceError("invalid", "unknown reason")
    if not User.objects.filter(pk=reported_id).exists():
        # The partner deleted their account in the meantime.
        raise ServiceError("no_partner", "that person is no longer here", status=409)
    report = Report(
        reporter=reporter,
        reported_id=reported_id,
        reason=reason,
        chat_lines=_clean_chat_lines(chat_lines),
    )
    if frame is not None:
        ext = frame_validate(frame)
        # A random name: the original file name is the client's and may say anything.
        report.frame.save(f"{os.urandom(12).hex()}.{ext}", frame, save=False)
    report.full_clean()
    report.save()
    return report


def _file_delete_on_commit(storage: Any, name: str | None) -> None:
    if not name:
        return
    # After commit: a rolled-back clear must not leave a row pointing at a deleted file.
    transaction.on_commit(lambda: storage.delete(name))


def _evidence_clear(report: Report) -> None:
    """Forget what the reporter sent (chat lines, still); the row and its reason stay."""
    if report.frame:
        _file_delete_on_commit(report.frame.storage, report.frame.name)
        report.frame = ""  # type: ignore[assignment]
    report.chat_lines = []


@transaction.atomic
def report_dismiss(*, report: Report, by: User | None) -> Report:
    """Close a report without a ban; its lines and still are deleted: chat messages are
    kept only where a ban rests on them."""
    report = Report.objects.select_for_update().get(pk=report.pk)
    _evidence_clear(report)
    report.status = ReportStatus.DISMISSED
    report.reviewed_at = timezone.now()
    report.reviewed_by = by
    report.save(update_fields=["frame", "chat_lines", "status", "reviewed_at", "reviewed_by"])
    return report


def _evidence_due(now: dt.datetime) -> QuerySet[Report]:
    """Reports filed before the retention period that still hold evidence and that no
    active ban rests on (open ones nobody acted on, dismissed ones, those whose ban ended)."""
    cutoff = now - dt.timedelta(days=settings.VIDEOCHAT_REPORT_RETENTION_DAYS)
    active_ban = Ban.objects.filter(report=OuterRef("pk"), expires_at__gt=now)
    return (
        Report.objects.filter(created_at__lte=cutoff)
        .exclude(chat_lines=[], frame="")
        .exclude(Exists(active_ban))
    )


@transaction.atomic
def report_evidence_purge(*, report_id: int, now: dt.datetime | None = None) -> bool:
    """Delete one report's chat lines and still if they are due (see _evidence_due)."""
    now = now or timezone.now()
    report = _evidence_due(now).select_for_update().filter(pk=report_id).first()
    if report is None:
        return False
    _evidence_clear(report)
    report.save(update_fields=["frame", "chat_lines"])
    return True


def reports_evidence_purge(*, now: dt.datetime | None = None) -> int:
    """Purge the evidence of every report that is due, in batches; returns how many."""
    now = now or timezone.now()
    count = 0
    last_id = 0
    while True:
        ids = list(
            _evidence_due(now)
            .filter(pk__gt=last_id)
            .order_by("pk")
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not ids:
            return count
        for report_id in ids:
            count += report_evidence_purge(report_id=report_id, now=now)
        last_id = ids[-1]


@transaction.atomic
def report_delete(*, report: Report) -> None:
    """Staff delete a report: its still goes with the row (a ban made from it keeps its own
    copy, and the ban row stays)."""
    report = Report.objects.select_for_update().get(pk=report.pk)
    if report.frame:
        _file_delete_on_commit(report.frame.storage, report.frame.name)
    report.delete()


# --- bans
@transaction.atomic
def ban_create(
    *,
    user: User,
    reason: str,
    duration: dt.timedelta,
    created_by: User | None,
    report: Report | None = None,
) -> Ban:
    """Ban `user` from video chat for `duration`, following their Facebook/VK ids; the
    report's still is copied as the ban image. Their open sockets are closed."""
    if duration <= dt.timedelta(0):
        raise ServiceError("invalid", "a ban lasts a positive time")
    now = timezone.now()
    uids = social_uids(user_id=user.pk)
    ban = Ban(
        user=user,
        reason=reason.strip() or "Breaking the rules",
        starts_at=now,
        expires_at=now + duration,
        created_by=created_by,
        report=report,
        facebook_uid=(uids["facebook"] or [""])[0],
        vk_uid=(uids["vk"] or [""])[0],
    )
    if report is not None and report.frame:
        ext = os.path.splitext(report.frame.name or "")[1] or ".jpg"
        with report.frame.open("rb") as f:
            ban.image.save(f"{os.urandom(12).hex()}{ext}", ContentFile(f.read()), save=False)
    ban.full_clean()
    ban.save()
    if report is not None:
        Report.objects.filter(pk=report.pk).update(
            status=ReportStatus.BANNED, reviewed_at=now, reviewed_by=created_by
        )
    send_on_commit(videochat_user_group(user.pk), events.Banned(ban_id=ban.pk))
    return ban


def ban_end_check(*, ban: Ban, expires_at: dt.datetime) -> None:
    if expires_at <= ban.starts_at:
        raise ServiceError("invalid", "a ban ends after it starts")


@transaction.atomic
def ban_update(*, ban: Ban, reason: str, expires_at: dt.datetime) -> Ban:
    """Staff change a ban's reason or end. A ban in force after the change closes the user's
    open video chat sockets, as a new ban does (an extended ban may have run out already)."""
    ban = Ban.objects.select_for_update().get(pk=ban.pk)
    ban_end_check(ban=ban, expires_at=expires_at)
    ban.reason = reason.strip() or ban.reason
    ban.expires_at = expires_at
    ban.full_clean()
    ban.save(update_fields=["reason", "expires_at"])
    if ban.is_active and ban.user_id is not None:
        send_on_commit(videochat_user_group(ban.user_id), events.Banned(ban_id=ban.pk))
    return ban


@transaction.atomic
def ban_delete(*, ban: Ban) -> None:
    """Staff delete a ban: its image goes with the row (the report keeps its own still)."""
    ban = Ban.objects.select_for_update().get(pk=ban.pk)
    if ban.image:
        _file_delete_on_commit(ban.image.storage, ban.image.name)
    ban.delete()


def bans_from_reports(
    *,
    reports: list[Report],
    duration: dt.timedelta,
    created_by: User | None,
    reason: str = "",
) -> list[Ban]:
    """The admin's "ban for N days" on selected reports: one ban per reported user."""
    bans = []
    seen: set[int] = set()
    for report in reports:
        if report.reported_id is None or report.reported_id in seen:
            continue
        seen.add(report.reported_id)
        reported = User.objects.get(pk=report.reported_id)
        shown = reason or f"Reported for: {report.get_reason_display()}"  # type: ignore[attr-defined]
        bans.append(
            ban_create(
                user=reported,
                reason=shown,
                duration=duration,
                created_by=created_by,
                report=report,
            )
        )
    return bans


@transaction.atomic
def ban_image_purge(*, ban_id: int) -> bool:
    """Delete an expired ban's image, and the report still it came from; keep the rows."""
    ban = Ban.objects.select_for_update().filter(pk=ban_id).first()
    if ban is None or ban.expires_at > timezone.now():
        return False
    purged = False
    if ban.image:
        _file_delete_on_commit(ban.image.storage, ban.image.name)
        ban.image = ""  # type: ignore[assignment]
        ban.save(update_fields=["image"])
        purged = True
    if ban.report_id is not None:
        report = Report.objects.select_for_update().get(pk=ban.report_id)
        if report.frame:
            _file_delete_on_commit(report.frame.storage, report.frame.name)
            report.frame = ""  # type: ignore[assignment]
            report.save(update_fields=["frame"])
            purged = True
    return purged


def ban_images_purge(*, now: dt.datetime | None = None) -> int:
    """Purge the images of every expired ban, in batches; returns how many were purged."""
    now = now or timezone.now()
    count = 0
    last_id = 0
    while True:
        ids = list(
            Ban.objects.filter(expires_at__lte=now, pk__gt=last_id)
            .filter(~Q(image="") | (Q(report__isnull=False) & ~Q(report__frame="")))
            .order_by("pk")
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not ids:
            return count
        for ban_id in ids:
            count += ban_image_purge(ban_id=ban_id)
        last_id = ids[-1]


# --- appeals
@transaction.atomic
def appeal_create(*, user: User, ban: Ban, text: str) -> Appeal:
    if ban.user_id != user.pk and active_ban_for(user) != ban:
        raise NotAllowed("that ban is not yours")
    if not ban.is_active:
        raise ServiceError("ban_over", "this ban is over")
    text = text.strip()
    if not text:
        raise ServiceError("invalid", "say why the ban should be lifted")
    Ban.objects.select_for_update().get(pk=ban.pk)  # one appeal at a time per ban
    if open_appeal(ban) is not None:
        raise ServiceError("appeal_open", "an appeal of this ban is already being reviewed")
    appeal = Appeal(ban=ban, text=text)
    appeal.full_clean()
    appeal.save()
    return appeal


@transaction.atomic
def appeal_decide(*, appeal: Appeal, accept: bool, by: User | None) -> Appeal:
    """Staff decision; accepting lifts the ban now (its image is purged as expired)."""
    appeal = Appeal.objects.select_for_update().get(pk=appeal.pk)
    if appeal.status != AppealStatus.OPEN:
        raise ServiceError("appeal_closed", "this appeal was already decided")
    now = timezone.now()
    appeal.status = AppealStatus.ACCEPTED if accept else AppealStatus.REJECTED
    appeal.decided_at = now
    appeal.decided_by = by
    appeal.save(update_fields=["status", "decided_at", "decided_by"])
    if accept:
        ban = appeal.ban
        if ban.expires_at > now:
            ban.expires_at = max(now, ban.starts_at + dt.timedelta(microseconds=1))
            ban.save(update_fields=["expires_at"])
    return appeal


# --- settings
@transaction.atomic
def chat_settings_update(
    *, user: User, gender: str, language: str, translation_target: str
) -> Profile:
    """The video chat settings kept on the profile: gender, language, translation target."""
    if gender not in Gender.values:
        raise ServiceError("invalid", "unknown gender")
    profile = profile_ensure(user=user)
    profile.gender = gender
    profile.language = language or "en"
    profile.translation_target = translation_target
    profile.full_clean()
    profile.save(update_fields=["gender", "language", "translation_target", "updated_at"])
    return profile
