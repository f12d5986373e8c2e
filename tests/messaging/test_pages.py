"""CallsApp's page: who gets the messenger, who is asked to sign in, who is too young."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_visitor_is_asked_to_sign_in():
    resp = Client().get("/messaging/")
    assert resp.status_code == 200
    assert b'data-testid="callsapp-login"' in resp.content
    assert b"/accounts/login/?next=/messaging/" in resp.content


@pytest.mark.parametrize("years, allowed", [(9, False), (10, True), (None, False)])
def test_age_rule_of_ten(years, allowed):
    today = dt.date.today()
    birth = None if years is None else today.replace(year=today.year - years) - dt.timedelta(days=1)
    client = Client()
    client.force_login(UserFactory(profile__birth_date=birth))
    resp = client.get("/messaging/")
    if allowed:
        assert resp.status_code == 200
        assert b"data-callsapp" in resp.content
        assert b"messaging/js/app.js" in resp.content
    else:
        assert resp.status_code == 403
        assert b"callsapp-age-restricted" in resp.content


def test_home_card_is_the_entry():
    client = Client()
    client.force_login(UserFactory())
    page = client.get("/").content.decode()
    card = page[page.index('data-testid="product-messaging"') :]
    assert 'href="/messaging/"' in card[:2000]
    assert "Coming soon" not in page


def test_page_has_no_inline_script_style_or_handlers():
    client = Client()
    client.force_login(UserFactory())
    html = client.get("/messaging/").content.decode()
    assert "style=" not in html
    assert " onclick=" not in html and " onsubmit=" not in html
    for chunk in html.split("<script")[1:]:
        assert chunk.lstrip().startswith('type="module" src=')
