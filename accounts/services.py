"""Every write of accounts/."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import string
from collections.abc import Mapping
from typing import Any

from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime import closecodes
from realtime.errors import ServiceError
from realtime.services import (
    device_sockets_close,
    presence_hidden,
    session_sockets_close,
    user_sockets_close,
)

from .models import BirthDateChange, Device, Profile, User
from .selectors import (
    devices_of_ended_sessions,
    meets_age_rule,
    privacy_defaults_locked,
    session_store,
)
from .social import profile_data_from
from .validators import validate_photo

log = logging.getLogger(__name__)

# Every login issues a device; past this many, the longest unseen are signed out.
MAX_DEVICES_PER_USER = 50
DEVICE_ID_LENGTH = 10
DEVICE_SEEN_EVERY = dt.timedelta(minutes=1)
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
def profile_ensure(*, user: User) -> Profile:
    """The user's profile row, made with the defaults if it does not exist yet."""
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile


@transaction.atomic
def profile_update(*, user: User, data: Mapping[str, Any]) -> Profile:
    """Apply the user's own edits (a subset of PROFILE_EDITABLE_FIELDS) to their profile."""
    unknown = set(data) - PROFILE_EDITABLE_FIELDS
    if unknown:
        raise ServiceError("invalid", f"not editable: {', '.join(sorted(unknown))}")
    profile = profile_ensure(user=user)
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
    _presence_follow(profile, was_visible=was_visible)
    if old_photo and old_photo != (profile.photo.name or ""):
        # The replaced (or cleared) photo is personal data too: remove the file.
        name = old_photo
        transaction.on_commit(lambda: profile.photo.storage.delete(name))
    return profile


PRIVACY_LOCKED_REASON = (
    "In the EEA, people under 16 keep these settings off. A legal guardian can ask us in "
    "writing to change them."
)


@transaction.atomic
def privacy_settings_set(
    *, user: User, show_online_status: bool | None = None, send_read_receipts: bool | None = None
) -> Profile:
    """The user's own choice of whether others see them online and get their read receipts
    (None: unchanged), from any product's settings. Switching one on is refused while the
    protective defaults are locked (privacy_defaults_locked); the profile page's form holds
    the same fields disabled, and profile_update keeps them off."""
    profile = Profile.objects.select_for_update().get(pk=profile_ensure(user=user).pk)
    wanted = {
        field: value
        for field, value in (
            ("show_online_status", show_online_status),
            ("send_read_receipts", send_read_receipts),
        )
        if value is not None
    }
    if any(wanted.values()) and privacy_defaults_locked(profile):
        raise ServiceError("privacy_locked", PRIVACY_LOCKED_REASON, status=403)
    was_visible = profile.show_online_status
    for field, value in wanted.items():
        setattr(profile, field, value)
    profile.save(update_fields=[*wanted, "updated_at"])
    _presence_follow(profile, was_visible=was_visible)
    return profile


def _presence_follow(profile: Profile, *, was_visible: bool) -> None:
    if was_visible and not profile.show_online_status:
        # Hiding takes effect now: whoever watches this user sees them go offline.
        presence_hidden(user_id=profile.user_id)


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
    profile = Profile.objects.select_for_update().get(pk=profile_ensure(user=user).pk)
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
    profile = profile_ensure(user=user)
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
    profile = profile_ensure(user=user)
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

    profile = profile_ensure(user=user)
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


# --- devices and sessions


def _new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(DEVICE_ID_LENGTH))


def describe_user_agent(user_agent: str) -> dict[str, str]:
    """A first description of a browser from its User-Agent header; the page refines it
    (device_describe) with what the browser says about itself."""
    ua = user_agent or ""
    platform = next((name for pattern, name in _UA_PLATFORMS if re.search(pattern, ua)), "")
    browser = next((m for pattern in _UA_BROWSERS if (m := re.search(pattern, ua))), None)
    make = f"{browser['name'].replace('Edg', 'Edge')} {browser['ver']}" if browser else ""
    model = "mobile" if re.search(r"Mobi|Android|iPhone", ua) else ("desktop" if ua else "")
    return {"make": make[:64], "model": model, "platform": platform}


_UA_PLATFORMS = (
    (r"Android", "Android"),
    (r"iPhone|iPad|iPod", "iOS"),
    (r"Windows", "Windows"),
    (r"Mac OS X|Macintosh", "macOS"),
    (r"CrOS", "ChromeOS"),
    (r"Linux", "Linux"),
)
# Order matters: Edge and Chrome also say "Safari", Chrome also says "Chrome" in Edge.
_UA_BROWSERS = (
    r"(?P<name>Firefox)/(?P<ver>\d+)",
    r"(?P<name>Edg)/(?P<ver>\d+)",
    r"(?P<name>Chrome)/(?P<ver>\d+)",
    r"Version/(?P<ver>\d+)[\d.]* (?:Mobile/\S+ )?(?P<name>Safari)",
)


@transaction.atomic
def device_issue(*, user: User, session_key: str, user_agent: str = "") -> Device:
    """A login made a session: issue the device that lives in it (a new id every login, as
    Matrix does). The oldest devices beyond MAX_DEVICES_PER_USER are signed out."""
    Device.objects.filter(session_key=session_key).delete()  # a session holds one device
    described = describe_user_agent(user_agent)
    now = timezone.now()
    for _ in range(5):
        try:
            with transaction.atomic():
                device = Device.objects.create(
                    user=user,
                    device_id=_new_device_id(),
                    session_key=session_key,
                    last_seen_at=now,
                    **described,
                )
            break
        except IntegrityError:  # 26**10 ids: a collision is rare, but not impossible
            continue
    else:
        raise ServiceError("device_id_exhausted", "could not issue a device id", status=503)
    extra = list(
        Device.objects.filter(user=user).order_by("-last_seen_at", "-pk")[MAX_DEVICES_PER_USER:]
    )
    for old in extra:
        _device_end(old)
    return device


@transaction.atomic
def device_rebind(*, device: Device, session_key: str) -> None:
    """The session's key changed (Django cycles it on a password change): follow it."""
    Device.objects.filter(session_key=session_key).exclude(pk=device.pk).delete()
    device.session_key = session_key
    device.save(update_fields=["session_key"])


@transaction.atomic
def device_describe(
    *, device: Device, make: str = "", model: str = "", platform: str = "", client_version: str = ""
) -> Device:
    """The browser describes itself (untrusted and cut short): what the devices page and the
    CBLINE connection log show. It names no device: it is always the session's own."""
    device.make = make[:64] or device.make
    device.model = model[:64] or device.model
    device.platform = platform[:64] or device.platform
    device.client_version = client_version[:64]
    device.last_seen_at = timezone.now()
    device.save(update_fields=["make", "model", "platform", "client_version", "last_seen_at"])
    return device


def device_seen(*, device: Device, now: dt.datetime | None = None) -> None:
    """Refresh "last seen", at most once per DEVICE_SEEN_EVERY (a write per request would
    be a write per page and per socket)."""
    now = now or timezone.now()
    if now - device.last_seen_at >= DEVICE_SEEN_EVERY:
        Device.objects.filter(pk=device.pk).update(last_seen_at=now)
        device.last_seen_at = now


def _device_end(device: Device, code: int = closecodes.LOGGED_OUT) -> None:
    """End the device's login session, close its sockets, and remove it."""
    if device.session_key:
        session_store().delete(device.session_key)
        session_sockets_close(session_key=device.session_key, code=code)
    device_sockets_close(device_pk=device.pk, code=code)
    device.delete()


@transaction.atomic
def session_end(*, session_key: str) -> None:
    """Logout: the session's device goes and that session's sockets close; the user's other
    sessions and their sockets stay."""
    for device in Device.objects.filter(session_key=session_key):
        device.delete()
    session_sockets_close(session_key=session_key)


@transaction.atomic
def device_forget(*, user: User, device_pk: int) -> bool:
    """ "Forget" on the devices page: that browser is signed out at once (its session is
    deleted, its sockets closed). False if the device is not the user's."""
    device = Device.objects.filter(user=user, pk=device_pk).first()
    if device is None:
        return False
    _device_end(device)
    return True


@transaction.atomic
def sessions_end_all(*, user: User) -> int:
    """ "Sign out everywhere": every session of the user ends, this one included."""
    devices = list(Device.objects.filter(user=user))
    for device in devices:
        _device_end(device)
    user_sockets_close(user_id=user.pk, code=closecodes.LOGGED_OUT)
    return len(devices)


def sessions_expired_purge(*, now: dt.datetime | None = None) -> int:
    """Beat: a session that ran out takes its device with it, as a logout would: off the
    devices list, no more CallsApp keys or stream, its sockets closed. Expired session rows go
    too (Django's clearsessions). Returns how many devices ended."""
    now = now or timezone.now()
    ended = 0
    for device in devices_of_ended_sessions(now=now):
        with transaction.atomic():
            _device_end(device)
        ended += 1
    Session.objects.filter(expire_date__lte=now).delete()
    return ended


def user_auth_changed(*, user: User, password_changed: bool, deactivated: bool) -> None:
    """Whatever changed a password or deactivated an account (the admin, staff deactivating,
    `manage.py changepassword`, deletion), its sockets close at once. Deactivated: every
    session ends. A new password: every socket is told to come back and be checked again,
    so a session still valid reconnects and the others (invalid by Django's session hash)
    are refused. The user's own change through allauth goes through sessions_end_others."""
    if deactivated:
        for device in Device.objects.filter(user=user):
            _device_end(device, closecodes.FORBIDDEN)
        user_sockets_close(user_id=user.pk, code=closecodes.FORBIDDEN)
    elif password_changed:
        user_sockets_close(user_id=user.pk, code=closecodes.REAUTHENTICATE)


@transaction.atomic
def sessions_end_others(*, user: User, keep_device_pk: int | None) -> int:
    """After a password change in the user's own session: the other sessions end now (Django
    would refuse them on their next request anyway), their sockets close for good, and they
    leave the devices list. This session and its sockets carry on."""
    others = list(Device.objects.filter(user=user).exclude(pk=keep_device_pk or 0))
    for device in others:
        _device_end(device)
    return len(others)


# --- deletion


@transaction.atomic
def account_delete_request(*, user: User) -> User:
    """The user deletes their profile: it is inaccessible at once (no login, no sessions, no
    open sockets) and its data is purged after ACCOUNT_DELETION_GRACE_DAYS."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.deletion_requested_at is None:
        user.deletion_requested_at = timezone.now()
    user.is_active = False
    # Saving is_active=False ends every session and closes every socket (user_auth_changed,
    # called for any save that deactivates).
    user.save(update_fields=["is_active", "deletion_requested_at"])
    return user


@transaction.atomic
def account_deactivate(*, user: User) -> User:
    """Staff deactivate (ban) an account: no login; every session ends and every socket
    closes for good (user_auth_changed, run for any save that deactivates)."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def account_reactivate(*, user: User) -> User:
    """Staff lift a deactivation. Not for an account awaiting deletion: active, it would
    still be purged; account_deletion_cancel restores those."""
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.deletion_requested_at is not None:
        raise ServiceError("deletion_requested", f"{user} awaits deletion: restore it instead")
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def account_deletion_cancel(*, user: User) -> User:
    """Staff restore an account whose deletion was requested (before it is purged)."""
    user = User.objects.select_for_update().get(pk=user.pk)
    user.deletion_requested_at = None
    user.is_active = True
    user.save(update_fields=["is_active", "deletion_requested_at"])
    return user
