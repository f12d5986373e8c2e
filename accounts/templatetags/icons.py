"""`{% icon "mic" %}` and `{% flag "de" %}`: SVG icons (lucide-static) and SVG flags (flag-icons)
served from npm packages, so no page depends on an emoji font being installed."""

from django import template
from django.utils.html import format_html

from accounts.countries import COUNTRY_NAMES

register = template.Library()


@register.simple_tag
def icon(name: str, label: str = "") -> str:
    """A mask-drawn icon in the text colour; `label` makes it announced, else it is decoration."""
    if label:
        return format_html(
            '<span class="icon icon-{}" role="img" aria-label="{}"></span>', name, label
        )
    return format_html('<span class="icon icon-{}" aria-hidden="true"></span>', name)


@register.simple_tag
def flag(code: str | None) -> str:
    """A country's SVG flag, or the "unknown" flag for an empty or unknown code."""
    cc = (code or "").upper()
    known = cc in COUNTRY_NAMES
    return format_html(
        '<span class="fi fi-{}" role="img" aria-label="{}"></span>',
        cc.lower() if known else "xx",
        COUNTRY_NAMES[cc] if known else "Country unknown",
    )
