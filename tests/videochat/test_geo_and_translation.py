"""The pieces the consumer leans on: the client IP behind proxies, the country and flag, and
the translation backends (LibreTranslate spoken by a real local HTTP server)."""

from __future__ import annotations

import pytest

from tests.videochat.libretranslate import libretranslate_server
from videochat import geo, translation


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("8.8.8.8", None, [], "8.8.8.8"),
        ("8.8.8.8", "1.1.1.1", [], "8.8.8.8"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "1.1.1.1", ["10.0.0.0/8"], "1.1.1.1"),
        # Two proxies of ours: the first address neither of them is.
        ("10.0.0.2", "6.6.6.6, 1.1.1.1, 10.0.0.9", ["10.0.0.0/8"], "1.1.1.1"),
        ("::1", "2a00:1450:4001::1", ["::1"], "2a00:1450:4001::1"),
        (None, "1.1.1.1", ["10.0.0.0/8"], None),
    ],
)
def test_client_ip(settings, peer, xff, trusted, expected):
    settings.VIDEOCHAT_TRUSTED_PROXIES = trusted
    assert geo.client_ip(peer, xff) == expected


def test_country_and_flag():
    assert geo.iptocc_country("8.8.8.8") == "US"
    assert geo.iptocc_country("2a00:1450:4001::1") == "IE"
    for private in ("127.0.0.1", "10.1.1.1", "192.168.0.1", "::1", "fe80::1", "garbage"):
        assert geo.iptocc_country(private) is None
    assert geo.flag_emoji("DE") == "🇩🇪" and geo.flag_emoji("") == ""
    info = geo.country_info("de")
    assert (info.code, info.name, str(info)) == ("DE", "Germany", "DE")


def test_default_backend_translates_nothing(settings):
    settings.TRANSLATION_BACKEND = "none"
    assert translation.translate("hallo", source="de", target="en") is None


def test_libretranslate_backend_and_when_not_to_ask(settings):
    with libretranslate_server() as lt:
        settings.TRANSLATION_BACKEND = "libretranslate"
        settings.LIBRETRANSLATE_URL = lt.url + "/"
        settings.LIBRETRANSLATE_API_KEY = ""
        assert translation.translate("hallo", source="de", target="en") == "[en] hallo"
        assert translation.translate("hi", source="en-US", target="en") is None
        assert translation.translate("hi", source="en", target="") is None
        assert translation.translate("?", source="", target="de") == "[de] ?"
        assert [r["source"] for r in lt.requests] == ["de", "auto"]
        lt.fail = True
        assert translation.translate("hallo", source="de", target="en") is None


def test_libretranslate_unreachable_gives_none(settings):
    settings.TRANSLATION_BACKEND = "libretranslate"
    settings.LIBRETRANSLATE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    assert translation.translate("hallo", source="de", target="en") is None
