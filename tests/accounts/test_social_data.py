"""Reading gender, birthday and country out of provider payloads (untrusted input)."""

from __future__ import annotations

import datetime as dt

from accounts.models import Gender
from accounts.social import profile_data_from


def test_facebook_fields():
    data = profile_data_from(
        "facebook",
        {
            "gender": "female",
            "birthday": "12/31/1999",
            "location": {"id": "1", "location": {"country_code": "de", "city": "Berlin"}},
        },
    )
    assert data == {"gender": Gender.FEMALE, "birth_date": dt.date(1999, 12, 31), "country": "DE"}


def test_facebook_partial_birthday_and_custom_gender():
    data = profile_data_from("facebook", {"gender": "non-binary", "birthday": "12/31"})
    assert data == {"gender": Gender.OTHER}


def test_vk_fields_and_country_by_name():
    data = profile_data_from(
        "vk", {"sex": 1, "birthday": "01.02.2001", "country": {"id": 1, "title": "Russia"}}
    )
    assert data == {"gender": Gender.FEMALE, "birth_date": dt.date(2001, 2, 1), "country": "RU"}


def test_vk_hidden_year_and_unknown_sex_give_nothing():
    assert profile_data_from("vk", {"sex": 0, "birthday": "01.02"}) == {}


def test_garbage_is_ignored():
    assert profile_data_from("vk", {"sex": "x", "birthday": 5, "country": ["RU"]}) == {}
    assert profile_data_from("facebook", {"location": "Berlin", "birthday": "99/99/2000"}) == {}
    assert profile_data_from("facebook", "not a dict") == {}
    assert profile_data_from("vk", {"birthday": "01.01.2999"}) == {}  # in the future


def test_x_gives_no_profile_fields():
    assert profile_data_from("twitter_oauth2", {"id": "1", "name": "n", "username": "u"}) == {}
