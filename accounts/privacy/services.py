"""Writes of the privacy pipeline: erasing a deleted account's data in every app."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from realtime.errors import ServiceError
from realtime.jobs import enqueue
from realtime.ratelimit import allow

from ..keys import deletion_request_rate_key
from ..models import User
from ..services import account_delete_request
from . import registry
from .models import DataExport, DeletionRequest

log = logging.getLogger(__name__)


def user_data_erase(*, user_id: int) -> bool:
    """Remove everything every app holds about the user, then the user row, in one
    transaction; their stored files go once it commits. Idempotent: False if the user is
    already gone."""
    with transaction.atomic():
        if not User.objects.select_for_update().filter(pk=user_id).exists():
            return False
        files: list[FieldFile] = []
        for step in registry.steps():
            files.extend(step.delete(user_id=user_id) or ())
        User.objects.filter(pk=user_id).delete()
        transaction.on_commit(lambda: files_delete(files))
    return True


def deleted_accounts_purge(*, now: dt.datetime | None = None, batch_size: int = 200) -> int:
    """Erase the accounts whose deletion was requested longer ago than the grace period, a
    batch at a time, each account in its own transaction; returns how many were erased. An
    account whose erasure fails is logged and left for the next run."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.ACCOUNT_DELETION_GRACE_DAYS)
    purged = 0
    failed: set[int] = set()
    while True:
        ids = list(
            User.objects.filter(deletion_requested_at__lt=cutoff, is_active=False)
            .exclude(pk__in=failed)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return purged
        for user_id in ids:
            try:
                purged += user_data_erase(user_id=user_id)
            except Exception:
                log.exception("could not erase the data of deleted user %s", user_id)
                failed.add(user_id)
        log.info("erased %d deleted accounts so far", purged)


def files_delete(files: Sequence[FieldFile]) -> None:
    for f in files:
        if not f or not f.name:
            continue
        try:
            f.storage.delete(f.name)
        except OSError:
            log.warning("could not delete stored file %s", f.name)


# --- export (portability)

EXPORT_SCHEMA = "comms-platform-export"
EXPORT_SCHEMA_VERSION = 1


def data_export_request(*, user: User, now: dt.datetime | None = None) -> DataExport:
    """Start building an archive of everything held about the user. Refused while one is
    being built, and more often than once per PRIVACY_EXPORT_MIN_INTERVAL_HOURS (a failed
    one does not count)."""
    now = now or timezone.now()
    with transaction.atomic():
        User.objects.select_for_update().get(pk=user.pk)  # one request at a time per user
        busy = DataExport.objects.filter(
            user=user, status__in=[DataExport.Status.PENDING, DataExport.Status.RUNNING]
        ).exists()
        if busy:
            raise ServiceError("export_busy", "Your export is already being built.", status=429)
        interval = dt.timedelta(hours=settings.PRIVACY_EXPORT_MIN_INTERVAL_HOURS)
        last = (
            DataExport.objects.filter(user=user, created_at__gt=now - interval)
            .exclude(status=DataExport.Status.FAILED)
            .order_by("-created_at")
            .first()
        )
        if last is not None:
            again = timezone.localtime(last.created_at + interval)
            raise ServiceError(
                "export_rate_limited",
                f"You can ask for one export every {settings.PRIVACY_EXPORT_MIN_INTERVAL_HOURS}"
                f" hours; ask again after {again:%Y-%m-%d %H:%M} UTC.",
                status=429,
            )
        export = DataExport.objects.create(
            user=user, token=secrets.token_urlsafe(32), steps_total=len(registry.steps())
        )
        # created_at is auto_now_add; `now` is the clock the rate limit was judged by.
        DataExport.objects.filter(pk=export.pk).update(created_at=now)
        export.refresh_from_db()
        transaction.on_commit(lambda: _export_enqueue(export.pk))
    return export


def _export_enqueue(export_id: int) -> None:
    enqueue("accounts.tasks.data_export_build", export_id)


def data_export_build(*, export_id: int) -> DataExport | None:
    """Build the archive: one JSON file per app (plus the files it names) and a manifest
    with the schema version, progress saved after each app. Idempotent: an export already
    built (or gone) is left as it is; one that died half-way is built again."""
    export = DataExport.objects.filter(pk=export_id).select_related("user").first()
    if export is None or export.status not in (
        DataExport.Status.PENDING,
        DataExport.Status.RUNNING,
    ):
        return export
    steps = registry.steps()
    DataExport.objects.filter(pk=export_id).update(
        status=DataExport.Status.RUNNING, steps_done=0, steps_total=len(steps)
    )
    try:
        with tempfile.TemporaryFile() as tmp:
            _archive_write(tmp, export, steps)
            tmp.seek(0)
            name = f"{secrets.token_hex(16)}.zip"
            export.file.save(name, File(tmp), save=False)
    except Exception:
        log.exception("data export %s failed", export_id)
        DataExport.objects.filter(pk=export_id).update(status=DataExport.Status.FAILED)
        raise
    now = timezone.now()
    DataExport.objects.filter(pk=export_id).update(
        status=DataExport.Status.READY,
        file=export.file.name,
        size=export.file.size,
        steps_done=len(steps),
        finished_at=now,
        expires_at=now + dt.timedelta(hours=settings.PRIVACY_EXPORT_LINK_HOURS),
    )
    export.refresh_from_db()
    return export


def _archive_write(out: IO[bytes], export: DataExport, steps: list[registry.PrivacyStep]) -> None:
    manifest: dict[str, Any] = {
        "schema": EXPORT_SCHEMA,
        "schema_version": EXPORT_SCHEMA_VERSION,
        "generated_at": timezone.now(),
        "user_id": export.user_id,
        "apps": {},
    }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for done, step in enumerate(steps, start=1):
            part = step.export(user_id=export.user_id)
            files = []
            for f in part.files:
                if not f or not f.name:
                    continue
                arcname = f"files/{step.app}/{f.name}"
                try:
                    # Streamed: a large file never sits in memory whole.
                    with f.storage.open(f.name, "rb") as src, archive.open(arcname, "w") as dst:
                        shutil.copyfileobj(src, dst)
                except OSError:
                    log.warning("export %s: stored file %s is missing", export.pk, f.name)
                    continue
                files.append(arcname)
            document = {
                "schema_version": EXPORT_SCHEMA_VERSION,
                "app": step.app,
                "title": step.title,
                "collections": part.collections,
                "files": files,
            }
            archive.writestr(f"{step.app}.json", _json(document))
            manifest["apps"][step.app] = {
                "title": step.title,
                "file": f"{step.app}.json",
                "counts": {name: len(rows) for name, rows in part.collections.items()},
            }
            DataExport.objects.filter(pk=export.pk).update(steps_done=done)
        archive.writestr("manifest.json", _json(manifest))


def _json(document: Any) -> str:
    return json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)


def data_exports_expire(*, now: dt.datetime | None = None, keep_days: int = 30) -> int:
    """Beat: delete the archives whose link has expired; forget export records after
    `keep_days` (they only served the rate limit and the page's history)."""
    now = now or timezone.now()
    expired = 0
    for export in DataExport.objects.filter(
        status=DataExport.Status.READY, expires_at__lte=now
    ).iterator():
        with transaction.atomic():
            changed = DataExport.objects.filter(
                pk=export.pk, status=DataExport.Status.READY
            ).update(status=DataExport.Status.EXPIRED, file="")
            if changed:
                stored = export.file
                transaction.on_commit(lambda f=stored: files_delete([f]))  # type: ignore[misc]
                expired += 1
    old = DataExport.objects.filter(created_at__lt=now - dt.timedelta(days=keep_days)).exclude(
        status__in=[DataExport.Status.PENDING, DataExport.Status.RUNNING]
    )
    files_delete([e.file for e in old if e.file])
    old.delete()
    return expired


# --- deletion requested by email, for people who cannot log in


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def deletion_request_create(
    *,
    email: str,
    message: str = "",
    confirm_url: Callable[[str], str],
    client_ip: str | None = None,
) -> DeletionRequest:
    """Record the request and mail a confirmation link to the address if an account uses
    it. The answer is the same either way, so the form tells nobody who has an account.
    Nothing is deleted until the link is confirmed. A second request for one address within
    the link's life mails nothing more."""
    per_hour = settings.PRIVACY_DELETION_REQUESTS_PER_HOUR
    if not allow(
        deletion_request_rate_key(client_ip), capacity=per_hour, per_second=per_hour / 3600
    ):
        raise ServiceError(
            "rate_limited",
            "Several deletion requests came from your network in the last hour. "
            "Please wait a little, then ask again.",
            status=429,
        )
    email = email.strip()
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    token = secrets.token_urlsafe(32)
    window = dt.timedelta(hours=settings.PRIVACY_DELETION_CONFIRM_HOURS)
    recent = DeletionRequest.objects.filter(
        email__iexact=email,
        status=DeletionRequest.Status.PENDING,
        mail_sent=True,
        created_at__gt=timezone.now() - window,
    ).exists()
    request = DeletionRequest.objects.create(
        email=email, message=message[:2000], user=user, token_hash=_token_hash(token)
    )
    if user is not None and not recent:
        link = confirm_url(token)
        send_mail(
            subject="Confirm the deletion of your account",
            message=(
                "Someone (we hope you) asked us to delete the account that uses this email "
                f"address.\n\nTo confirm, open this link within "
                f"{settings.PRIVACY_DELETION_CONFIRM_HOURS} hours and press the button:\n"
                f"{link}\n\nThe account is then closed at once and everything we hold about "
                f"you is erased after {settings.ACCOUNT_DELETION_GRACE_DAYS} days.\n\n"
                "If you did not ask for this, ignore this message: nothing will change."
            ),
            from_email=None,
            recipient_list=[user.email or email],
        )
        DeletionRequest.objects.filter(pk=request.pk).update(mail_sent=True)
    return request


def deletion_request_pending(*, token: str) -> DeletionRequest | None:
    """The request this link confirms, if it can still be confirmed."""
    window = dt.timedelta(hours=settings.PRIVACY_DELETION_CONFIRM_HOURS)
    return DeletionRequest.objects.filter(
        token_hash=_token_hash(token),
        status=DeletionRequest.Status.PENDING,
        mail_sent=True,
        user__isnull=False,
        created_at__gt=timezone.now() - window,
    ).first()


@transaction.atomic
def deletion_request_confirm(*, token: str) -> DeletionRequest:
    """The owner of the address confirmed: the account is deleted the same way as from its
    own settings (closed at once, erased after the grace period)."""
    pending = deletion_request_pending(token=token)
    # Locked and checked again: two clicks on the link confirm once.
    request = None
    if pending is not None:
        request = (
            DeletionRequest.objects.select_for_update()
            .filter(pk=pending.pk, status=DeletionRequest.Status.PENDING)
            .first()
        )
    if request is None or request.user_id is None:
        raise ServiceError(
            "invalid_link",
            "This link is not valid: it has expired or was already used. "
            "Ask again from the deletion request form.",
            status=404,
        )
    user = User.objects.get(pk=request.user_id)
    account_delete_request(user=user)
    request.status = DeletionRequest.Status.CONFIRMED
    request.confirmed_at = timezone.now()
    request.save(update_fields=["status", "confirmed_at"])
    return request


def deletion_requests_purge(*, now: dt.datetime | None = None) -> int:
    """Beat: forget unconfirmed requests once their link has expired, and confirmed ones
    after PRIVACY_DELETION_REQUEST_RETENTION_DAYS."""
    now = now or timezone.now()
    window = dt.timedelta(hours=settings.PRIVACY_DELETION_CONFIRM_HOURS)
    keep = dt.timedelta(days=settings.PRIVACY_DELETION_REQUEST_RETENTION_DAYS)
    unconfirmed, _ = DeletionRequest.objects.filter(
        status=DeletionRequest.Status.PENDING, created_at__lt=now - window
    ).delete()
    done, _ = DeletionRequest.objects.filter(created_at__lt=now - keep).delete()
    return unconfirmed + done
