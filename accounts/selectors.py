"""Reads of accounts/ that several callers need."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.utils import timezone

from .countries import EEA
from .models import BirthDateChange, Device, Profile, User


def profile_of(user: User) -> Profile:
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile


def shows_online_status(user_id: int) -> bool:
    return not Profile.objects.filter(user_id=user_id, show_online_status=False).exists()


def hidden_presence_ids(user_ids: Iterable[int]) -> set[int]:
    """Of these users, those who switched their online status off."""
    return set(
        Profile.objects.filter(user_id__in=list(user_ids), show_online_status=False).values_list(
            "user_id", flat=True
        )
    )


def age_on(birth_date: dt.date, today: dt.date) -> int:
    years = today.year - birth_date.year
    return years - ((today.month, today.day) < (birth_date.month, birth_date.day))


def meets_age_rule(user: User, product: str, *, today: dt.date | None = None) -> bool:
    """Whether the user is old enough for `product` (settings.AGE_RULES); an unknown birth
    date passes only products without an age rule."""
    minimum = settings.AGE_RULES.get(product, 0)
    if minimum <= 0:
        return True
    birth_date = profile_of(user).birth_date
    if birth_date is None:
        return False
    return age_on(birth_date, today or timezone.localdate()) >= minimum


def privacy_defaults_locked(profile: Profile, *, today: dt.date | None = None) -> bool:
    """CallsApp's policy: in the EEA, users under 16 keep the protective privacy defaults
    (online status hidden, no read receipts) unless a legal guardian instructs otherwise."""
    if profile.guardian_allows_privacy_changes or profile.birth_date is None:
        return False
    if profile.country.upper() not in EEA:
        return False
    return age_on(profile.birth_date, today or timezone.localdate()) < settings.EEA_PRIVACY_AGE


def birth_date_change_pending(user: User) -> BirthDateChange | None:
    return BirthDateChange.objects.filter(user=user, status=BirthDateChange.Status.PENDING).first()


def birth_date_changes_decided(user: User) -> list[BirthDateChange]:
    decided = BirthDateChange.objects.filter(user=user).exclude(
        status=BirthDateChange.Status.PENDING
    )
    return list(decided.order_by("-created_at")[:5])


def devices_of(user: User) -> list[Device]:
    return list(Device.objects.filter(user=user).order_by("-last_seen_at", "-pk"))


def user_by_email(email: str) -> User | None:
    """The active account whose login email this is (case-insensitive), if any."""
    if not email:
        return None
    return User.objects.filter(email__iexact=email.strip(), is_active=True).first()


def birth_date_missing(user: User) -> bool:
    return profile_of(user).birth_date is None


# Uploaded files by folder, and who may read them. Photos are shown to other signed-in users
# (profile pages, the nav bar); report frames and ban images are evidence for staff only.
# A folder not listed here is staff-only too.
MEDIA_FOR_SIGNED_IN = ("profiles/",)


def media_clean_name(name: str) -> str | None:
    """The stored name a media URL path names, or None when it is not a plain relative path.
    Django has already decoded %xx once, so `..%2f` arrives as `../`; a `%` still present
    (double encoding) would be decoded again by nginx's X-Accel-Redirect, so it is refused
    too. Checked before any folder rule: a prefix check on an unnormalised name lets
    `profiles/../videochat/reports/...` through."""
    if not name or "%" in name or "\\" in name or "\x00" in name:
        return None
    segments = name.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        return None
    return "/".join(segments)


def media_readable_by(user: User, name: str) -> bool:
    """May `user` (possibly anonymous) read the uploaded file stored as `name` (a name
    already cleaned by `media_clean_name`)?"""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    if not name.startswith(MEDIA_FOR_SIGNED_IN):
        return False
    # A deleted profile is invisible at once, its photo included (erased after the grace).
    return Profile.objects.filter(photo=name, user__is_active=True).exists()
