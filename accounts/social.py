"""What a social provider's profile payload says about the person, in our Profile's terms.

Only the fields the video chat policy lists (gender, birthday, country) are read. Payloads
are untrusted: anything malformed or partial (a birthday without a year) is ignored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from .countries import country_code
from .models import Gender

ProfileData = dict[str, Any]


def _date(text: object, fmt: str) -> dt.date | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.strptime(text.strip(), fmt).date()
    except ValueError:
        return None


def _facebook(data: dict[str, Any]) -> ProfileData:
    out: ProfileData = {}
    gender = data.get("gender")
    if gender in ("female", "male"):
        out["gender"] = Gender.FEMALE if gender == "female" else Gender.MALE
    elif isinstance(gender, str) and gender:
        out["gender"] = Gender.OTHER  # Facebook's custom genders
    # "MM/DD/YYYY" with user_birthday; "MM/DD" or "YYYY" alone are not a birth date.
    if birthday := _date(data.get("birthday"), "%m/%d/%Y"):
        out["birth_date"] = birthday
    # location{location{country_code,city}} with user_location: a Page holding a Location.
    place = (
        (data.get("location") or {}).get("location")
        if isinstance(data.get("location"), dict)
        else None
    )
    if isinstance(place, dict) and (code := country_code(place.get("country_code"))):
        out["country"] = code
    return out


def _vk(data: dict[str, Any]) -> ProfileData:
    out: ProfileData = {}
    sex = data.get("sex")  # VK: 1 female, 2 male, 0 not said
    if sex in (1, 2, "1", "2"):
        out["gender"] = Gender.FEMALE if str(sex) == "1" else Gender.MALE
    # VK ID sends "DD.MM.YYYY"; a hidden year leaves "DD.MM", which is no birth date.
    if birthday := _date(data.get("birthday") or data.get("bdate"), "%d.%m.%Y"):
        out["birth_date"] = birthday
    country = data.get("country")
    if isinstance(country, dict):
        country = country.get("title")
    if isinstance(country, str) and (code := country_code(country)):
        out["country"] = code
    return out


_READERS = {"facebook": _facebook, "vk": _vk}


def profile_data_from(provider: str, extra_data: object) -> ProfileData:
    """Profile fields found in `extra_data` of a `provider` login (X gives none of them)."""
    reader = _READERS.get(provider)
    if reader is None or not isinstance(extra_data, dict):
        return {}
    data = reader(extra_data)
    birth_date = data.get("birth_date")
    if birth_date is not None and not (dt.date(1900, 1, 1) <= birth_date < timezone.localdate()):
        del data["birth_date"]
    return data
