"""Writes of the privacy pipeline: erasing a deleted account's data in every app."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from ..models import User
from . import registry

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
