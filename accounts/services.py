"""Every write of accounts/."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from realtime.errors import ServiceError
from realtime.events import send_on_commit
from realtime.keys import presence_group
from realtime.services import user_sockets_close

from .models import BirthDateChange, Device, Profile, User
from .selectors import meets_age_rule, privacy_defaults_locked, profile_of
from .social import profile_data_from
from .validators import validate_photo

log = logging.getLogger(__name__)

# A browser that keeps clearing its storage makes a new device each time; keep the list sane.
MAX_DEVICES_PER_USER = 50
PROFILE_EDITABLE_FIELDS = frozenset(
    {
        "nickname",
        "description",
        "gender",
        "country",
        "photo",
        "language",
        "translation_target",
        "show_online_status",
        "send_read_receipts",
    }
)
# The birth date is not among them: it gates products, so it is given once and changed only
# through a request that staff review (birth_date_change_request / birth_date_change_decide).
# Fields a social login may fill, and only while the user has left them empty.
PROVIDER_FILLABLE_FIELDS = ("gender", "birth_date", "country")


def age_require(*, user: User, product: str) -> None:
    """Refuse a product to a user under its age rule (Video chat 18+, CallsApp 10+)."""
    if not meets_age_rule(user, product):
        raise ServiceError("age_restricted", f"you must be old enough to use {product}", status=403)


# --- profile


@transaction.atomic
def profile_update(*, user: User, data: Mapping[str, Any]) -> Profile:
    """Apply the user's own edits (a subset of PROFILE_EDITABLE_FIELDS) to their profile."""
    unknown = set(data) - PROFILE_EDITABLE_FIELDS
    if unknown:
        raise ServiceError("invalid", f"not editable: {', '.join(sorted(unknown))}")
    profile = profile_of(user)
    old_photo = profile.photo.name if profile.photo else ""
    was_visible = profile.show_online_status
    for field, value in data.items():
        if field == "photo":
            if value is None:  # no upload: keep the photo
                continue
            if isinstance(value, UploadedFile):
                validate_photo(value)
            else:
                value = value or ""  # False: the "clear" box was ticked
        setattr(profile, field, value)
    _privacy_defaults_apply(profile)
    profile.full_clean()
    profile.save()
    if was_visible and not profile.show_online_status:
        # Hiding takes effect now: whoever watches this user sees them go offline.
        send_on_commit(
            presence_group(user.pk),
            {"type": "presence.update", "user_id": user.pk, "online": False},
        )
    if old_photo and old_photo != (profile.photo.name or ""):
        # The replaced (or cleared) photo is personal data too: remove the file.
        name = old_photo
        transaction.on_commit(lambda: profile.photo.storage.delete(name))
    return profile


def _privacy_defaults_apply(profile: Profile) -> list[str]:
    """Hold an EEA under-16's privacy settings at their protective defaults; returns the
    fields changed (the caller saves)."""
    if not privacy_defaults_locked(profile):
        return []
    changed = [f for f in ("show_online_status", "send_read_receipts") if getattr(profile, f)]
    for field in changed:
        setattr(profile, field, False)
    return changed


@transaction.atomic
def profile_birth_date_set(*, user: User, birth_date: dt.date, at_signup: bool = False) -> Profile:
    """Record the birth date of a user who has none. Once given it is fixed: a correction is
    a request to staff (birth_date_change_request). `at_signup`: the sign-up form's answer
    replaces what a social provider filled a moment before, in the same sign-up."""
    profile = Profile.objects.select_for_update().get(pk=profile_of(user).pk)
    fixed = profile.birth_date is not None and not at_signup
    if fixed and profile.birth_date != birth_date:
        raise ServiceError(
            "birth_date_fixed",
            "Your birth date is already set. Ask for a correction instead.",
            status=409,
        )
    profile.birth_date = birth_date
    changed = _privacy_defaults_apply(profile)
    profile.full_clean()
    profile.save(update_fields=["birth_date", *changed, "updated_at"])
    return profile


@transaction.atomic
def birth_date_change_request(*, user: User, requested: dt.date, reason: str) -> BirthDateChange:
    """Ask staff to correct the birth date. One open request at a time; nothing changes on
    the profile until staff approve."""
    profile = profile_of(user)
    if profile.birth_date is None:
        raise ServiceError("birth_date_missing", "Add your birth date first.")
    if requested == profile.birth_date:
        raise ServiceError("unchanged", "That is the birth date we already have.")
    reason = reason.strip()
    if not reason:
        raise ServiceError("reason_required", "Say why the birth date is wrong.")
    if BirthDateChange.objects.filter(user=user, status=BirthDateChange.Status.PENDING).exists():
        raise ServiceError("pending", "You already have a request waiting for review.", status=409)
    change = BirthDateChange(
        user=user, current=profile.birth_date, requested=requested, reason=reason
    )
    change.full_clean()
    change.save()
    log.info("birth date change requested", extra={"user_id": user.pk, "change_id": change.pk})
    return change


@transaction.atomic
def birth_date_change_decide(
    *, change_id: int, staff: User, approve: bool, note: str = ""
) -> BirthDateChange:
    """Staff approve or refuse a pending request; approval writes the new birth date. The
    request keeps who decided, when and why."""
    if not staff.is_staff:
        raise ServiceError("forbidden", "Only staff decide birth date changes.", status=403)
    change = BirthDateChange.objects.select_for_update().get(pk=change_id)
    if change.status != BirthDateChange.Status.PENDING:
        raise ServiceError("decided", "This request was already decided.", status=409)
    change.status = BirthDateChange.Status.APPROVED if approve else BirthDateChange.Status.REFUSED
    change.decided_at = timezone.now()
    change.decided_by = staff
    change.note = note.strip()[:500]
    change.save(update_fields=["status", "decided_at", "decided_by", "note"])
    if approve:
        profile = Profile.objects.select_for_update().get(user_id=change.user_id)
        profile.birth_date = change.requested
        changed = _privacy_defaults_apply(profile)
        profile.full_clean()
        profile.save(update_fields=["birth_date", *changed, "updated_at"])
    return change


@transaction.atomic
def profile_fill_from_provider(*, user: User, provider: str, extra_data: object) -> list[str]:
    """Fill gender, birth date and country from a social login's payload where the user has
    not set them; returns the fields filled. What the user chose is never overwritten."""
    found = profile_data_from(provider, extra_data)
    profile = profile_of(user)
    filled = [f for f in PROVIDER_FILLABLE_FIELDS if f in found and not getattr(profile, f)]
    for field in filled:
        setattr(profile, field, found[field])
    if filled:
        changed = _privacy_defaults_apply(profile)
        profile.save(update_fields=[*filled, *changed, "updated_at"])
    return filled


@transaction.atomic
def profile_country_guess(*, user: User, ip: str | None) -> str:
    """Set the country from the client's IP (GeoIP) when the user has none yet."""
    import iptocc

    profile = profile_of(user)
    if profile.country or not ip:
        return profile.country
    try:
        code = iptocc.country_code(ip) or ""
    except ValueError:
        code = ""
    if code:
        profile.country = code.upper()
        changed = _privacy_defaults_apply(profile)
        profile.save(update_fields=["country", *changed, "updated_at"])
    return profile.country


# --- devices


@transaction.atomic
def device_register(
    *,
    user: User,
    device_id: str,
    make: str = "",
    model: str = "",
    platform: str = "",
    client_version: str = "",
) -> Device:
    """Create or refresh the device the browser names by its own id (all untrusted input)."""
    if not device_id or len(device_id) > 64:
        raise ServiceError("invalid", "a device id is 1 to 64 characters")
    device, created = Device.objects.update_or_create(
        user=user,
        device_id=device_id,
        defaults={
            "make": make[:64],
            "model": model[:64],
            "platform": platform[:64],
            "client_version": client_version[:64],
            "last_seen_at": timezone.now(),
        },
    )
    if created:
        stale = Device.objects.filter(user=user).order_by("-last_seen_at", "-pk")
        stale_ids = list(stale.values_list("pk", flat=True)[MAX_DEVICES_PER_USER:])
        if stale_ids:
            Device.objects.filter(pk__in=stale_ids).delete()
    return device


@transaction.atomic
def device_forget(*, user: User, device_pk: int) -> bool:
    """Remove one of the user's devices from their list; False if it is not theirs."""
    deleted, _ = Device.objects.filter(user=user, pk=device_pk).delete()
    return deleted > 0


# --- deletion


@transaction.atomic
def account_delete_request(*, user: User) -> User:
    """The user deletes their profile: it is inaccessible at once (no login, no sessions, no
    open sockets) and its data is purged after ACCOUNT_DELETION_GRACE_DAYS."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.deletion_requested_at is None:
        user.deletion_requested_at = timezone.now()
    user.is_active = False
    user.save(update_fields=["is_active", "deletion_requested_at"])
    # Sessions die with is_active (auth backends refuse inactive users on every request);
    # sockets are told to close on commit.
    user_sockets_close(user_id=user.pk)
    return user


@transaction.atomic
def account_deletion_cancel(*, user: User) -> User:
    """Staff restore an account whose deletion was requested (before it is purged)."""
    user = User.objects.select_for_update().get(pk=user.pk)
    user.deletion_requested_at = None
    user.is_active = True
    user.save(update_fields=["is_active", "deletion_requested_at"])
    return user
