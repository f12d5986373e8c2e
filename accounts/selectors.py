"""Reads of accounts/ that several callers need."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .countries import EEA
from .models import BirthDateChange, Device, Profile, User


def profile_of(user: User) -> Profile:
    """The user's profile, read fresh; the defaults, unsaved, when the row does not exist
    yet. A selector never writes: services that change it start from profile_ensure."""
    return Profile.objects.filter(user_id=user.pk).first() or Profile(user_id=user.pk)


def shows_online_status(user_id: int) -> bool:
    return not Profile.objects.filter(user_id=user_id, show_online_status=False).exists()


def shows_online_status_of(user: User) -> bool:
    """As shows_online_status, free when the profile came with the user (session_identity)."""
    try:
        return user.profile.show_online_status
    except Profile.DoesNotExist:
        return True


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
    if settings.AGE_RULES.get(product, 0) <= 0:
        return True
    return _old_enough(profile_of(user).birth_date, product, today)


def meets_age_rule_loaded(user: User, product: str) -> bool | None:
    """meets_age_rule on the profile that came with the user (select_related, a socket's
    session_identity), without a query; None when it came without one (ask meets_age_rule)."""
    if not User.profile.is_cached(user):  # type: ignore[attr-defined]
        return None
    profile = User.profile.related.get_cached_value(user)  # type: ignore[attr-defined]
    return _old_enough(profile.birth_date if isinstance(profile, Profile) else None, product, None)


def _old_enough(birth_date: dt.date | None, product: str, today: dt.date | None) -> bool:
    minimum = settings.AGE_RULES.get(product, 0)
    if minimum <= 0:
        return True
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


# Where a login session remembers its device (server-side session data, so trusted).
DEVICE_SESSION_KEY = "_device_pk"


def device_of_session(*, user: User, device_pk: object) -> Device | None:
    if not isinstance(device_pk, int):
        return None
    return Device.objects.filter(pk=device_pk, user=user).first()


def session_store(session_key: str | None = None):  # type: ignore[no-untyped-def]
    """The configured session engine's store (deleting a session ends that login)."""
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


def devices_of_ended_sessions(*, now: dt.datetime) -> list[Device]:
    """Devices whose login session has run out or is gone (no logout ended them). Sessions
    live in the database (Django's default engine, which this project uses)."""
    live = Session.objects.filter(expire_date__gt=now).values("session_key")
    return list(
        Device.objects.filter(session_key__isnull=True)
        | Device.objects.exclude(session_key__in=live)
    )


def _session_hash_ok(session_hash: str, user: User) -> bool:
    # As django.contrib.auth.get_user: a password change invalidates other sessions, and a
    # rotated SECRET_KEY keeps sessions made under its fallbacks valid.
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )


def _columns(model: type[Any], alias: str) -> tuple[list[str], str]:
    """(attnames, "alias.col, ...") of `model`'s concrete fields, in field order."""
    fields = model._meta.concrete_fields
    return [f.attname for f in fields], ", ".join(f"{alias}.{f.column}" for f in fields)


@functools.cache
def _session_identity_sql(vendor: str) -> tuple[str, list[str], list[str], list[str], Any]:
    """The statement of session_identities, each model's attnames and the database's value
    converters, built once a process: as a queryset (select_related + a subquery) it was
    built and compiled per socket, which cost the servers more CPU than anything else of a
    reconnect storm's connect (benchmarks/reconnect_storm.py's profile: 30 % of a server).
    On PostgreSQL the keys are one array parameter (the same statement for any batch); the
    other databases get `{keys}` to fill with a placeholder per key."""
    device_names, device_cols = _columns(Device, "d")
    user_names, user_cols = _columns(User, "u")
    profile_names, profile_cols = _columns(Profile, "p")
    keys = "= ANY(%s)" if vendor == "postgresql" else "IN ({keys})"
    sql = f"""
        SELECT {device_cols}, {user_cols}, {profile_cols}, s.session_data
        FROM {Device._meta.db_table} d
        JOIN {User._meta.db_table} u ON u.id = d.user_id
        LEFT JOIN {Profile._meta.db_table} p ON p.user_id = u.id
        LEFT JOIN {Session._meta.db_table} s
            ON s.session_key = d.session_key AND s.expire_date > %s
        WHERE d.session_key {keys}
    """  # noqa: S608 (table and column names from the models, values as parameters)
    # What the ORM would apply to each column (SQLite: aware datetimes, booleans).
    converters = []
    fields = [
        *Device._meta.concrete_fields,
        *User._meta.concrete_fields,
        *Profile._meta.concrete_fields,
    ]
    for index, field in enumerate(fields):
        col = field.get_col(field.model._meta.db_table)
        found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
        if found:
            converters.append((index, found, col))
    return sql, device_names, user_names, profile_names, converters


def _session_identity_rows(session_keys: list[str]) -> dict[str, list[Any]]:
    """Session key -> its row (device, user, profile columns and the session's data if it
    has not expired), converted as the ORM would; keys bound to no device are missing. One
    statement for all of them."""
    sql, *_, converters = _session_identity_sql(connection.vendor)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    if connection.vendor == "postgresql":
        params: list[Any] = [now, session_keys]
    else:
        sql = sql.replace("{keys}", ", ".join(["%s"] * len(session_keys)))
        params = [now, *session_keys]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found: dict[str, list[Any]] = {}
    key_index = Device._meta.concrete_fields.index(Device._meta.get_field("session_key"))
    for fetched in rows:
        row = list(fetched)
        for index, funcs, col in converters:
            if row[index] is not None:
                for func in funcs:
                    row[index] = func(row[index], col, connection)
        found[row[key_index]] = row
    return found


def _identity_models(row: list[Any]) -> tuple[Device, str | None]:
    """The device of a session_identity row, with its user and profile (None if the user has
    none) loaded, and the session's data (None: expired). Models of their own for each
    socket, even when two sockets of one session connect together."""
    _, device_names, user_names, profile_names, _ = _session_identity_sql(connection.vendor)
    db = connection.alias
    i, j, k = len(device_names), len(device_names) + len(user_names), len(row) - 1
    device = Device.from_db(db, device_names, row[:i])
    user = User.from_db(db, user_names, row[i:j])
    # The profile's primary key tells a missing profile (LEFT JOIN) from a present one.
    profile = Profile.from_db(db, profile_names, row[j:k]) if row[j] is not None else None
    # Cached as select_related caches them: device.user, user.profile (None: known missing).
    Device.user.field.set_cached_value(device, user)
    User.profile.related.set_cached_value(user, profile)
    if profile is not None:
        Profile.user.field.set_cached_value(profile, user)
    return device, row[k]


Identity = tuple[User | AnonymousUser, Device | None]


def session_identity(session_key: str | None) -> Identity:
    """Who a socket's session cookie is: the user and the device bound to that session, or
    (AnonymousUser, None). One fixed statement: the device bound to the session key, its
    user and profile (which answers whether the user shows their online status), and the
    session's data if it has not expired."""
    return session_identities([session_key])[0]


def session_identities(session_keys: list[str | None]) -> list[Identity]:
    """session_identity of each key, in one statement for them all: every socket of a
    reconnect storm asks at once, and a process reads the sessions of the connects that
    arrive together in one go (accounts.middleware)."""
    asked = list({key for key in session_keys if key})
    rows = _session_identity_rows(asked) if asked else {}
    return [_identity(rows.get(key or "")) for key in session_keys]


def _identity(row: list[Any] | None) -> Identity:
    if row is None or not row[-1]:  # no device bound, or the session has expired
        return AnonymousUser(), None
    device, session_data = _identity_models(row)
    data = session_store().decode(session_data)
    user_id = data.get(SESSION_KEY)
    session_hash = data.get(HASH_SESSION_KEY)
    if not user_id or not session_hash or data.get(DEVICE_SESSION_KEY) != device.pk:
        return AnonymousUser(), None
    if data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser(), None
    if User._meta.pk.to_python(user_id) != device.user_id:  # type: ignore[union-attr]
        return AnonymousUser(), None
    if not device.user.is_active or not _session_hash_ok(session_hash, device.user):
        return AnonymousUser(), None
    return device.user, device


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
