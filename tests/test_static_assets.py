"""Browser libraries from npm are served as static files, and every icon the pages use exists."""

import re
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders
from django.template import Context, Template

ICONS_CSS = Path(settings.BASE_DIR) / "static" / "shared" / "css" / "icons.css"


def test_every_icon_class_points_at_an_installed_lucide_svg():
    urls = re.findall(r'url\("\.\./\.\./(vendor/[^"]+)"\)', ICONS_CSS.read_text())
    assert len(urls) > 10
    missing = [u for u in urls if not finders.find(u)]
    assert missing == []


def test_flag_stylesheet_and_flags_are_served_from_the_npm_package():
    assert finders.find("vendor/flag-icons/css/flag-icons.min.css")
    assert finders.find("vendor/flag-icons/flags/4x3/de.svg")
    assert finders.find("vendor/flag-icons/flags/4x3/xx.svg")  # the "unknown" flag


def test_favicon_exists_and_favicon_ico_redirects_to_it(client):
    assert finders.find("shared/img/favicon.svg")
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == f"{settings.STATIC_URL}shared/img/favicon.svg"


def test_icon_and_flag_tags_render_markup_without_emoji():
    html = Template(
        '{% load icons %}{% icon "mic" %}{% flag "de" %}{% flag "" %}{% flag "zz" %}'
    ).render(Context())
    assert 'class="icon icon-mic"' in html
    assert 'class="fi fi-de"' in html and 'aria-label="Germany"' in html
    assert html.count('class="fi fi-xx"') == 2
    assert not re.search("[\U0001f000-\U0001ffff\u2600-\u27bf]", html)


def test_only_the_npm_folders_the_pages_use_are_static_files():
    assert finders.find("vendor/@matrix-org/matrix-sdk-crypto-wasm/index.mjs") or finders.find(
        "vendor/@matrix-org/matrix-sdk-crypto-wasm/package.json"
    )
    assert not finders.find("vendor/lucide-static/font/lucide.ttf")
    assert not finders.find("vendor/lucide-static/dist/esm/lucide-static.mjs")
